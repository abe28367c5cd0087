"""Prompt adherence for emoji text-to-image: does a sample show what its prompt asked for?

There is no CLIP here (nothing may be downloaded), so adherence is measured through the emoji identity
classifier (unmix.metrics.identity), in three tiers of evidence:

1. A prompt that is an emoji's CLDR short name ("red apple") names one emoji: top-1 / top-5 identity accuracy
   (is that emoji among the classifier's 1 / 5 most likely) and group accuracy (is the most likely Unicode
   group, summing p(emoji | image) per group, the named emoji's). Strong evidence: one right answer.
2. A prompt that is a CLDR keyword ("fruit") but no name: the keyword hit rate, the share of samples whose
   most likely emoji carries that keyword, next to its chance rate (the share of all emoji that carry it).
3. Any prompt that names no single emoji (keywords and free text such as "blue apple"): a text-image
   retrieval score. Each emoji is put in text space as the frozen encoder's sentence vector of
   "name, keyword, keyword, ..."; a prompt's similarity to emoji e is z-scored over all emoji
   (z(t, e) = (cos(t, e) - mean_e) / std_e, so prompts that resemble everything do not win every image),
   and an image scores s(x, t) = sum_e p(e | x) z(t, e). Retrieval accuracy is the share of samples whose
   own prompt has the highest score among the distinct prompts of the same tier (chance: 1 / their count).
   Weaker evidence: it measures "looks like emoji whose descriptions resemble the prompt", through a
   sentence encoder that was never trained on images, and a classifier that only knows the existing emoji
   (a blue apple can at best look like a blue thing or an apple).

    from unmix.metrics.prompts import prompt_adherence
    prompt_adherence(samples, ["red apple"] * 4 + ["fruit"] * 4)
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from unmix.errors import UnmixError
from unmix.metrics.identity import EmojiIdentity, EmojiIndex, emoji_identity
from unmix.text.bank import caption_bank
from unmix.text.encoder import load_text_encoder


def normalize(prompt: str) -> str:
    """Lower case, whitespace collapsed: how prompts are matched to names and keywords."""
    return " ".join(prompt.lower().split())


def prompt_kinds(prompts: Sequence[str], index: EmojiIndex) -> list[tuple[str, int | list[int] | None]]:
    """For each prompt: ("name", k) when it is emoji k's short name, ("keyword", [emoji carrying it]) when it is a
    keyword but no name, else ("other", None)."""
    names = {normalize(n): k for k, n in enumerate(index.names)}
    keywords: dict[str, list[int]] = {}
    for k, kws in enumerate(index.keywords):
        for w in dict.fromkeys(map(normalize, kws)):
            keywords.setdefault(w, []).append(k)
    out: list[tuple[str, int | list[int] | None]] = []
    for p in map(normalize, prompts):
        out.append(("name", names[p]) if p in names else ("keyword", keywords[p]) if p in keywords else ("other", None))
    return out


def emoji_descriptions(index: EmojiIndex) -> list[str]:
    """Each emoji in words for the text side of retrieval: "red apple, apple, fruit, red"."""
    return [", ".join([n, *[k for k in kws if normalize(k) != normalize(n)]]) for n, kws in zip(index.names,
                                                                                             index.keywords)]


def text_similarity(prompts: Sequence[str], index: EmojiIndex, encoder=None) -> torch.Tensor:
    """z(t, e) [P, K]: cosine similarity of each prompt's sentence vector to each emoji description's,
    standardised over the emoji (zero mean, unit spread per prompt). Emoji descriptions are cached."""
    encoder = encoder or load_text_encoder()
    described = caption_bank([[d] for d in emoji_descriptions(index)], encoder)
    emoji = F.normalize(described.pooled[[v[0] for v in described.variants]].float(), dim=1)
    asked = F.normalize(encoder.encode(list(prompts)).pooled.float().cpu(), dim=1)
    cos = asked @ emoji.T
    return (cos - cos.mean(1, keepdim=True)) / cos.std(1, keepdim=True).clamp(min=1e-8)


def retrieval_accuracy(probs: torch.Tensor, prompts: Sequence[str], index: EmojiIndex, encoder=None) -> float | None:
    """Share of samples (rows of probs [N, K]) whose own prompt scores highest among the distinct prompts given,
    with s(x, t) = sum_e p(e | x) z(t, e); None with fewer than two distinct prompts."""
    distinct = list(dict.fromkeys(normalize(p) for p in prompts))
    if len(distinct) < 2:
        return None
    scores = probs.double() @ text_similarity(distinct, index, encoder).double().T  # [N, P]
    own = torch.as_tensor([distinct.index(normalize(p)) for p in prompts])
    return float((scores.argmax(1) == own).double().mean())


def _check(samples, prompts) -> tuple[torch.Tensor, list[str]]:
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise UnmixError("prompts must be a list of strings, one per sample")
    if not isinstance(samples, torch.Tensor) or samples.ndim != 4 or samples.shape[1] != 3:
        shape = list(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise UnmixError(f"prompt adherence needs RGB images [N, 3, H, W] in [-1, 1], got {shape}")
    if len(prompts) != len(samples):
        raise UnmixError(f"got {len(prompts)} prompts for {len(samples)} samples; give one prompt per sample")
    if len(prompts) == 0:
        raise UnmixError("prompt adherence needs at least one sample")
    return samples, list(prompts)


def prompt_adherence(samples: torch.Tensor, prompts: Sequence[str], identity: EmojiIdentity | None = None,
                     encoder=None) -> dict[str, float | int | None]:
    """Adherence of samples [N, 3, H, W] in [-1, 1] to their prompts (one per sample), as fractions in [0, 1]:

    - named (count), top1, top5, group: over samples whose prompt is an emoji's short name;
    - keyword (count), keyword_hit, keyword_chance: over prompts that are keywords but no name;
    - other (count: prompts naming no single emoji, keywords included), retrieval, retrieval_chance: the
      weaker text-image retrieval score among those prompts (None with fewer than two distinct ones).

    `identity` defaults to the cached classifier of all emoji (trained on first use); `encoder` (for retrieval
    only) to the packaged text encoder, loaded only when some prompt names no emoji."""
    samples, prompts = _check(samples, prompts)
    identity = identity or emoji_identity()
    index = identity.index
    probs = identity.probs(samples)
    kinds = prompt_kinds(prompts, index)
    out: dict[str, float | int | None] = {"n": len(prompts)}

    named = [i for i, (kind, _) in enumerate(kinds) if kind == "name"]
    out["named"] = len(named)
    if named:
        want = torch.as_tensor([kinds[i][1] for i in named])
        p = probs[named]
        top5 = p.topk(min(5, p.shape[1]), dim=1).indices
        groups = sorted(set(index.groups))
        member = torch.zeros(len(index), len(groups))
        member[torch.arange(len(index)), torch.as_tensor([groups.index(g) for g in index.groups])] = 1
        group_of = member.argmax(1)
        out["top1"] = float((top5[:, 0] == want).float().mean())
        out["top5"] = float((top5 == want[:, None]).any(1).float().mean())
        out["group"] = float(((p @ member).argmax(1) == group_of[want]).float().mean())

    keyword = [i for i, (kind, _) in enumerate(kinds) if kind == "keyword"]
    out["keyword"] = len(keyword)
    if keyword:
        best = probs[keyword].argmax(1).tolist()
        out["keyword_hit"] = sum(b in kinds[i][1] for i, b in zip(keyword, best)) / len(keyword)
        out["keyword_chance"] = sum(len(kinds[i][1]) for i in keyword) / len(keyword) / len(index)

    other = [i for i, (kind, _) in enumerate(kinds) if kind != "name"]
    out["other"] = len(other)
    if other:
        distinct = len({normalize(prompts[i]) for i in other})
        out["retrieval"] = retrieval_accuracy(probs[other], [prompts[i] for i in other], index, encoder)
        out["retrieval_chance"] = 1 / distinct if distinct > 1 else None
    return out


def format_adherence(m: dict) -> list[str]:
    """Lines for a terminal: one per tier present."""
    lines = []
    if m.get("named"):
        lines.append(f"named emoji ({m['named']} samples): top-1 {m['top1']:.1%}, top-5 {m['top5']:.1%}, "
                     f"group {m['group']:.1%}")
    if m.get("keyword"):
        lines.append(f"keywords ({m['keyword']} samples): hit {m['keyword_hit']:.1%} "
                     f"(chance {m['keyword_chance']:.1%})")
    if m.get("other") and m.get("retrieval") is not None:
        lines.append(f"no single emoji ({m['other']} samples): retrieval {m['retrieval']:.1%} "
                     f"(chance {m['retrieval_chance']:.1%}; weaker evidence)")
    return lines


__all__ = ["emoji_descriptions", "format_adherence", "normalize", "prompt_adherence", "prompt_kinds",
           "retrieval_accuracy", "text_similarity"]
