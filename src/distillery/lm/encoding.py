"""Token ids of a text, memoised on the tokenizer itself (so the memo lives and dies with it).

One call of a transformers tokenizer costs 100-150 us, and the same texts come back again
and again: acting re-renders every past turn at every step, and a vision training set asks
the same few questions of thousands of images.

    ids = encode(tok, text)        # tok.encode(text, add_special_tokens=False), a fresh list
    memo(tok)[key] = value         # other per-tokenizer lookups (non-str keys: texts are str)
"""

from __future__ import annotations

from typing import Any

_MEMO_ATTR = "_distillery_encoded"
_MEMO_MAX = 100_000


def memo(tok: Any) -> dict[Any, Any]:
    """The memo kept on `tok`."""
    cache = getattr(tok, _MEMO_ATTR, None)
    if cache is None:
        cache = {}
        setattr(tok, _MEMO_ATTR, cache)
    return cache


def encode(tok: Any, text: str) -> list[int]:
    """Token ids of `text` without special tokens, memoised on `tok`."""
    cache = memo(tok)
    ids = cache.get(text)
    if ids is None:
        if len(cache) >= _MEMO_MAX:
            cache.clear()
        ids = cache[text] = tuple(tok.encode(text, add_special_tokens=False))
    return list(ids)
