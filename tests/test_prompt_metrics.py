"""Prompt adherence (unmix.metrics.prompts) through an emoji identity classifier (unmix.metrics.identity).

Real emoji images, seen through the blur and shifts the classifier is built to tolerate, must score high for their
own names and low for shuffled ones. The default-suite tests train a small classifier over 48 emoji (seconds);
the full 1,381-emoji classifier is checked under @slow.
"""
import pytest
import torch

from unmix.errors import UnmixError
from unmix.metrics import identity as ident
from unmix.metrics.prompts import format_adherence, prompt_adherence, prompt_kinds

FRUITS = ["red apple", "green apple", "banana", "grapes", "strawberry", "cherries", "pear", "lemon"]


@pytest.fixture(scope="module")
def index():
    return ident.emoji_index()


@pytest.fixture(scope="module")
def small(index):
    """A classifier of 8 fruits plus every 34th emoji (48 in all), trained for 150 steps."""
    fruit = [index.names.index(n) for n in FRUITS]
    rest = [k for k in range(0, len(index), 34) if k not in fruit][:40]
    sub = index.subset(fruit + rest)
    net, accuracy = ident.train_identity_net(sub.images, steps=150, batch=64, seed=0)
    return ident.EmojiIdentity(net, sub, accuracy)


def views(images: torch.Tensor, seed: int) -> torch.Tensor:
    """Held-out views: 1.5 px shifts and blur sigma 0.8, a seed the classifier never trained on."""
    return ident.random_views(images, torch.Generator().manual_seed(seed), shift=1.5, blur=(0.8, 0.8), jitter=False)


def test_prompt_kinds_tell_names_keywords_and_free_text(index):
    kinds = prompt_kinds(["Red  Apple", "fruit", "blue apple", "cat"], index)
    assert kinds[0] == ("name", index.names.index("red apple"))  # case and spacing do not matter
    assert kinds[1][0] == "keyword" and index.names.index("banana") in kinds[1][1]
    assert all("fruit" in index.keywords[k] for k in kinds[1][1])
    assert kinds[2] == ("other", None)
    assert kinds[3] == ("name", index.names.index("cat"))  # a name wins over a keyword


def test_blur_is_gaussian_and_zero_blur_is_identity():
    x = torch.zeros(2, 3, 15, 15)
    x[:, :, 7, 7] = 1
    y = ident.gaussian_blur(x, torch.tensor([0.0, 1.0]))
    assert torch.equal(y[0], x[0])
    row = y[1, 0, 7, 5:10] / y[1, 0, 7, 7]
    torch.testing.assert_close(row, torch.exp(-torch.tensor([4.0, 1, 0, 1, 4]) / 2), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y[1].sum(), torch.tensor(3.0))


def test_real_emoji_score_high_for_their_names_and_low_shuffled(small):
    assert small.check_accuracy > 0.8
    images = views(small.index.images, seed=7)
    own = list(small.index.names)
    m = prompt_adherence(images, own, identity=small)
    assert m["named"] == 48 and m["top1"] > 0.8 and m["top5"] > 0.95 and m["group"] > 0.85
    shuffled = [own[(i + 1) % len(own)] for i in range(len(own))]  # every prompt names another emoji
    s = prompt_adherence(images, shuffled, identity=small)
    assert s["top1"] < 0.1 and s["top5"] < 0.3  # chance: 1/48 and 5/48
    assert any("top-5" in line for line in format_adherence(m))


def test_keyword_hits_and_retrieval_beat_chance(small, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # the emoji descriptions' embeddings are cached there
    pytest.importorskip("tokenizers")
    fruit = views(small.index.images[:len(FRUITS)], seed=8)
    m = prompt_adherence(fruit, ["fruit"] * len(FRUITS), identity=small)
    assert m["keyword"] == len(FRUITS) and m["keyword_hit"] > 0.8
    assert m["keyword_chance"] == pytest.approx(sum("fruit" in k for k in small.index.keywords) / 48)
    assert m["retrieval"] is None  # one distinct prompt: nothing to retrieve among
    # free-text prompts: each emoji described by a paraphrase of its keywords must retrieve its own image
    prompts = [f"a picture of: {', '.join(k) or n}" for n, k in zip(small.index.names, small.index.keywords)]
    images = views(small.index.images, seed=9)
    r = prompt_adherence(images, prompts, identity=small)
    assert r["other"] == 48 and r["retrieval_chance"] == pytest.approx(1 / 48)
    assert r["retrieval"] > 0.5
    shuffled = prompt_adherence(images, prompts[1:] + prompts[:1], identity=small)
    assert shuffled["retrieval"] < 0.15


def test_mismatched_inputs_are_one_clear_error(small):
    x = torch.zeros(2, 3, 32, 32)
    with pytest.raises(UnmixError, match="2 samples"):
        prompt_adherence(x, ["red apple"], identity=small)
    with pytest.raises(UnmixError, match="list of strings"):
        prompt_adherence(x, "red apple", identity=small)
    with pytest.raises(UnmixError, match=r"\[N, 3, H, W\]"):
        prompt_adherence(torch.zeros(2, 1, 8, 8), ["a", "b"], identity=small)


@pytest.mark.slow
def test_cached_classifier_knows_every_emoji(index):
    full = ident.emoji_identity()
    assert full.check_accuracy > 0.9
    images = views(index.images, seed=11)
    m = prompt_adherence(images, list(index.names), identity=full)
    assert m["top1"] > 0.9 and m["top5"] > 0.97 and m["group"] > 0.95
    # shuffled at random: neighbours in Unicode's order look alike ("grinning face" and "... with big eyes")
    perm = torch.randperm(len(index), generator=torch.Generator().manual_seed(0)).tolist()
    s = prompt_adherence(images, [index.names[j] for j in perm], identity=full)
    assert s["top5"] < 0.03  # chance: 5 / 1381
