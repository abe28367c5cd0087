"""Exact denoisers: distributions whose noisy posterior mean has a closed form.

With no training noise they make samplers, guidance and inpainting testable against the truth,
and they show what a perfectly trained network would do.

For a mixture of diagonal Gaussians N(mu_k, diag(v_k)) with weights w_k, the noisy density is the
mixture of N(mu_k, diag(v_k + sigma^2)), and

    E[x0 | x] = sum_k r_k(x) (mu_k + v_k / (v_k + sigma^2) * (x - mu_k)),

with r_k the component responsibilities at noise level sigma. A finite dataset is the mixture of
zero-variance components centred on the points (the "ideal" denoiser that memorises its data).
"""
from __future__ import annotations

import functools
import math

import torch

from unmix.data.digits import digits_images
from unmix.denoiser import sigma_batch
from unmix.errors import UnmixError

_CHUNK_ELEMENTS = 2**24  # bound on N*K*D temporaries


class GaussianMixture:
    """Mixture of diagonal Gaussians; an exact denoiser, density and sampler.

    weights [K], means [K, D], variances [K, D] (diagonal) or [K] (isotropic, faster for large K*D).
    `labels` [K] groups components into classes for conditioning: cond = class index selects
    those components; cond = num_classes (the reserved "no label") means the whole mixture.
    Samples are reshaped to `event_shape` (default [D]).
    """

    def __init__(self, weights, means, variances, labels=None, event_shape=None, dtype=torch.float64):
        self.means = torch.as_tensor(means, dtype=dtype)
        if self.means.ndim != 2:
            raise UnmixError(f"means must be [K, D], got shape {tuple(self.means.shape)}")
        K, D = self.means.shape
        self.weights = torch.as_tensor(weights, dtype=dtype).reshape(K)
        if torch.any(self.weights < 0) or not torch.isclose(self.weights.sum(), torch.tensor(1.0, dtype=dtype)):
            raise UnmixError("mixture weights must be non-negative and sum to 1")
        v = torch.as_tensor(variances, dtype=dtype)
        self.isotropic = v.ndim <= 1
        self.variances = v.expand(K).clone() if self.isotropic else v.expand(K, D).clone()
        if torch.any(self.variances < 0):
            raise UnmixError("mixture variances must be non-negative")
        self.labels = torch.arange(K) if labels is None else torch.as_tensor(labels, dtype=torch.long)
        self.num_classes = int(self.labels.max()) + 1
        self.event_shape = tuple(event_shape) if event_shape is not None else (D,)
        if math.prod(self.event_shape) != D:
            raise UnmixError(f"event shape {self.event_shape} does not hold {D} values")

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def to(self, device=None, dtype=None) -> GaussianMixture:
        m = GaussianMixture.__new__(GaussianMixture)
        m.__dict__.update(self.__dict__)
        for name in ("means", "weights", "variances"):
            setattr(m, name, getattr(self, name).to(device=device, dtype=dtype))
        m.labels = self.labels.to(device)
        return m

    # -- the pieces every method shares -------------------------------------------------------
    def _log_weights(self, cond: torch.Tensor | None, n: int) -> torch.Tensor:
        """[N, K] log prior weights, restricted to each sample's class when conditioned."""
        logw = self.weights.log().expand(n, -1)
        if cond is None:
            return logw
        cond = torch.as_tensor(cond, device=self.labels.device).reshape(-1).expand(n)
        if torch.any(cond < 0) or torch.any(cond > self.num_classes):
            raise UnmixError(f"class label out of range: valid 0..{self.num_classes - 1}, "
                             f"or {self.num_classes} for none")
        keep = (self.labels[None, :] == cond[:, None]) | (cond[:, None] == self.num_classes)
        return logw.masked_fill(~keep, -math.inf)

    def _component_terms(self, x: torch.Tensor, s2: torch.Tensor):
        """Per component: Gaussian log-density of x at noise s2 [N, K], and total variance."""
        if self.isotropic:
            var = self.variances[None, :] + s2[:, None]  # [N, K]
            d2 = (x * x).sum(1, keepdim=True) - 2 * x @ self.means.T + (self.means**2).sum(1)[None, :]
            logp = -0.5 * d2.clamp(min=0) / var - 0.5 * self.dim * torch.log(2 * math.pi * var)
        elif bool(s2.min() == s2.max()):  # one noise level for the batch (what samplers do): matmuls
            var = self.variances + s2[0]  # [K, D]
            inv = 1 / var
            d2 = (x * x) @ inv.T - 2 * x @ (self.means * inv).T + (self.means**2 * inv).sum(1)[None, :]
            logp = -0.5 * d2 - 0.5 * torch.log(2 * math.pi * var).sum(1)[None, :]
            var = var[None]  # [1, K, D]
        else:
            var = self.variances[None] + s2[:, None, None]  # [N, K, D]
            diff = x[:, None, :] - self.means[None]
            logp = -0.5 * ((diff**2) / var + torch.log(2 * math.pi * var)).sum(-1)
        return logp, var

    def _chunks(self, n: int):
        step = max(1, _CHUNK_ELEMENTS // max(1, self.means.numel()))
        return [slice(i, min(n, i + step)) for i in range(0, n, step)]

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        if math.prod(x.shape[1:]) != self.dim:
            raise UnmixError(f"input shape {tuple(x.shape[1:])} does not match the mixture's dimension {self.dim}")
        return x.reshape(x.shape[0], self.dim).to(self.means.dtype)

    # -- the denoiser ------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, sigma, cond: torch.Tensor | None = None) -> torch.Tensor:
        xf = self._flat(x)
        s2 = sigma_batch(sigma, xf) ** 2
        if torch.any(s2 < 0) or torch.any(~torch.isfinite(s2)):
            raise UnmixError("sigma must be finite and >= 0")
        out = torch.empty_like(xf)
        for sl in self._chunks(xf.shape[0]):
            xc, sc = xf[sl], s2[sl]
            logp, var = self._component_terms(xc, sc)
            logw = self._log_weights(None if cond is None else _rows(cond, sl, x), xc.shape[0])
            r = torch.softmax(logp + logw, dim=1)
            if self.isotropic:
                shrink = self.variances[None, :] / var.clamp(min=torch.finfo(var.dtype).tiny)  # [N, K]
                shrink = torch.where(var > 0, shrink, torch.ones_like(shrink))
                # sum_k r_k (mu_k + shrink_k (x - mu_k)) = (r*shrink).sum * x + (r*(1-shrink)) @ mu
                out[sl] = (r * shrink).sum(1, keepdim=True) * xc + (r * (1 - shrink)) @ self.means
            elif var.shape[0] == 1:  # shared noise level: sum_k r_k (shrink_k x + (1 - shrink_k) mu_k) by matmuls
                shrink = torch.where(var[0] > 0, self.variances / var[0].clamp(min=torch.finfo(var.dtype).tiny), 1.0)
                out[sl] = (r @ shrink) * xc + r @ ((1 - shrink) * self.means)
            else:
                shrink = torch.where(var > 0, self.variances[None] / var.clamp(min=torch.finfo(var.dtype).tiny), 1.0)
                post = self.means[None] + shrink * (xc[:, None, :] - self.means[None])
                out[sl] = (r[:, :, None] * post).sum(1)
        return out.reshape(x.shape).to(x.dtype)

    def log_prob(self, x: torch.Tensor, sigma=0.0, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Exact log-density of x under the mixture convolved with N(0, sigma^2 I), in nats, shape [N]."""
        xf = self._flat(x)
        s2 = sigma_batch(sigma, xf) ** 2
        out = torch.empty(xf.shape[0], dtype=xf.dtype, device=xf.device)
        for sl in self._chunks(xf.shape[0]):
            logp, _ = self._component_terms(xf[sl], s2[sl])
            logw = self._log_weights(None if cond is None else _rows(cond, sl, x), logp.shape[0])
            out[sl] = torch.logsumexp(logp + logw, dim=1)
        return out

    def score(self, x: torch.Tensor, sigma, cond=None) -> torch.Tensor:
        """grad_x log p_sigma(x) from Tweedie's formula: (D(x, sigma) - x) / sigma^2."""
        s = sigma_batch(sigma, x)
        return (self(x, s, cond) - x) / s.reshape(-1, *([1] * (x.ndim - 1))) ** 2

    def sample(self, n: int, generator: torch.Generator | None = None,
               cond: torch.Tensor | None = None) -> torch.Tensor:
        """n exact samples (optionally of given classes), shaped [n, *event_shape]."""
        probs = self._log_weights(cond, n).softmax(1)
        k = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        z = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype)
        std = self.variances.sqrt()
        std = std[k][:, None] if self.isotropic else std[k]
        return (self.means[k] + std * z).reshape(n, *self.event_shape)

    @classmethod
    def fit(cls, data, n_components: int, random_state: int = 0, event_shape=None) -> GaussianMixture:
        """Fit a diagonal mixture with scikit-learn and wrap it as an exact denoiser."""
        from sklearn.mixture import GaussianMixture as SkGMM

        flat = torch.as_tensor(data).reshape(len(data), -1).double().numpy()
        gm = SkGMM(n_components, covariance_type="diag", random_state=random_state).fit(flat)
        return cls(gm.weights_ / gm.weights_.sum(), gm.means_, gm.covariances_, event_shape=event_shape)


class FiniteDataset(GaussianMixture):
    """The ideal denoiser of a finite dataset: equal-weight zero-variance components on the points.

    Sampling it with an exact ODE solver returns (copies of) training points: memorisation made exact.
    """

    def __init__(self, points, labels=None, dtype=torch.float64):
        pts = torch.as_tensor(points, dtype=dtype)
        n = pts.shape[0]
        super().__init__(torch.full((n,), 1.0 / n, dtype=dtype), pts.reshape(n, -1), torch.zeros(n, dtype=dtype),
                         labels=labels, event_shape=pts.shape[1:], dtype=dtype)

    def log_prob(self, x, sigma=0.0, cond=None):
        s = sigma_batch(sigma, self._flat(x))
        if torch.any(s <= 0):
            raise UnmixError("a finite dataset has no density at sigma = 0; pass sigma > 0")
        return super().log_prob(x, sigma, cond)


def _rows(cond, sl: slice, x: torch.Tensor) -> torch.Tensor:
    cond = torch.as_tensor(cond).reshape(-1)
    return cond.expand(x.shape[0])[sl] if cond.numel() == 1 else cond[sl]


def ring_of_gaussians(k: int = 8, radius: float = 0.8, std: float = 0.05) -> GaussianMixture:
    """k isotropic Gaussians evenly spaced on a circle (the benchmark's 2-D mixture)."""
    angles = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
    means = radius * torch.stack([angles.cos(), angles.sin()], 1)
    return GaussianMixture(torch.full((k,), 1.0 / k), means, torch.full((k,), std**2))


@functools.lru_cache(maxsize=4)
def digits_mixture(n_components: int = 16, random_state: int = 0) -> GaussianMixture:
    """A diagonal mixture fitted to scikit-learn's 8x8 digits scaled to [-1, 1] (64-D, shown as 1x8x8).

    Cached: the fit takes seconds and the mixture is never modified in place."""
    images, _ = digits_images()
    return GaussianMixture.fit(images.reshape(len(images), -1), n_components, random_state, event_shape=(1, 8, 8))
