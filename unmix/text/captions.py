"""Captions as data: the fixed list of caption variants each training image carries.

Text-to-image models learn prompts better when an image is seen under several phrasings (caption
augmentation; DALL-E 3's descriptive recaptioning is the large-scale version). Here the variants are fixed
per item, so that every variant's embedding can be computed once and cached: training draws one variant
per item per step and never runs the encoder. The empty string is the null caption (see unmix.conditioning).
"""
from __future__ import annotations

from collections.abc import Iterable

from unmix.conditioning import NULL_CAPTION


def clean(text: str) -> str:
    """A caption with its whitespace collapsed (newlines, tabs, runs of spaces become one space)."""
    return " ".join(str(text).split())


def unique(texts: Iterable[str]) -> list[str]:
    """Non-empty cleaned captions, first occurrence kept, in order (duplicates differ only in case or spacing)."""
    seen, out = set(), []
    for t in map(clean, texts):
        if t != NULL_CAPTION and t.lower() not in seen:
            seen.add(t.lower())
            out.append(t)
    return out


def emoji_captions(name: str, keywords: Iterable[str]) -> list[str]:
    """An emoji's variants: its CLDR short name first, then each keyword alone, all keywords as a tag list,
    and the name followed by its keywords.

    For the red apple: "red apple", "apple", "fruit", "red", "apple, fruit, red", "red apple, apple, fruit, red".
    Keywords alone teach keyword prompts ("fruit" gives some fruit); the tag lists teach combinations.
    """
    keywords = [k for k in unique(keywords) if k.lower() != clean(name).lower()]
    tags = [", ".join(keywords)] if len(keywords) > 1 else []
    combined = [f"{clean(name)}, {', '.join(keywords)}"] if keywords else []
    return unique([name, *keywords, *tags, *combined])
