"""A tokenizer trained on the environment's own text, so that what the model copies is
made of frequent whole tokens.

Acting is mostly copying: names, addresses, ids and dates from an observation into a tool
call. Two granularities (`TokenizerConfig.granularity`):

- **parts** (default). Words are runs of letters; every digit is its own token; ``_ . - @
  : '`` and other punctuation are separate pieces. ``jade.nash@wayne.com`` is ``jade . nash
  @ wayne . com``, ``+1 555 1710`` is digits and spaces. Every token the model has to copy
  is then one of a few hundred, each seen thousands of times in training, and a name never
  seen before is made of familiar parts. Measured on the default task set: 270 distinct
  tokens in the teacher's actions, none seen fewer than 4 times (vocabulary 1,127).
- **names**. A compound name (``invoice_acme.pdf``, ``ann.lee@acme.com``, ``2024-05-03``)
  is one pre-token, so BPE makes every name it saw a single token. The first warm-up runs
  recorded that a 1.3M-parameter model copied names perfectly when each was one token and
  failed when they were spelled out character by character. On the STAGE task set it did worse than
  parts: there every person and address is a different token, most seen 1–3 times (3,067
  of the 3,634 distinct tokens in the teacher's actions), and BPE cut unseen ones
  inconsistently (``jade.`` + ``nash@wayne.com``, ``17`` + ``10``); the student trained on
  it copied no name correctly (test success 0.008).

Both share:

- **Pre-tokenizer.** Whitespace is its own pre-token, not glued to the next word as in
  GPT-2: a name is then the *same* tokens after a space in an observation and after
  ``="`` in an action, which is exactly what copying needs. JSON escapes (``\\n``) are one
  piece.
- **BPE, byte level.** The initial alphabet is all 256 bytes, so any text (unseen names,
  other scripts, emoji) encodes without an unknown token, and ``decode(encode(text)) ==
  text`` exactly (spaces, quotes, newlines and escapes included). ``min_frequency=1`` and
  a generous ``vocab_size`` let every word of the training text become one token.
- **Special tokens**: ``<|pad|>``, ``<|endoftext|>`` (eos), ``<|unk|>`` and the prompt
  markers of `distillery.lm.markers.MARKERS`, each one token that text never produces.

Train it on everything the model will have to copy: instructions, observations and
actions of the teacher trajectories, and ideally the environment's vocabularies (all file,
folder and people names, addresses, dates it can generate), so that test-time names the
trajectories never showed are whole tokens too. `token_stats` measures how whole they are.

Measured for granularity=names (tests/lm/test_tokenizer.py: a synthetic STAGE-like corpus of 60 file names, 12
folders, 40 people with addresses and 30 dates rendered into listings, instructions and
tool calls; 739 tokens): all 156 distinct names and name parts seen in training encode to
exactly 1 token. An unseen combination of seen parts encodes as whole parts
(``slides_globex_q3.xlsx`` -> ``slides _ globex _ q3 .xlsx``, 6 tokens; ``jo.wu@acme.org``
-> 4). A word made of parts never seen (``quarterly``) falls back to short pieces, down to
bytes: that is why the environment's vocabularies belong in the training text.

Usage::

    tok = train_tokenizer(texts, TokenizerConfig(vocab_size=8192))
    tok.save_pretrained(path)        # AutoTokenizer.from_pretrained(path) gives it back
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from distillery.config import _f, check_choices
from distillery.lm.markers import MARKERS

PAD = "<|pad|>"
EOS = "<|endoftext|>"
UNK = "<|unk|>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, EOS, UNK, *MARKERS.values())

# Alternatives are tried left to right at each position (Oniguruma syntax):
#   a JSON escape | a word (letters/digits joined by _ . - @ : ', leading _ or . allowed,
#   trailing _ allowed) | whitespace | other punctuation | leftover _ or . | a lone backslash
PRETOKEN_PATTERN = (
    r"\\[nrtbf\"\\/u]"
    r"|[_.]*[\p{L}\p{N}]+(?:[_.\-@:']+[\p{L}\p{N}]+)*_*"
    r"|\s+"
    r"|[^\s\p{L}\p{N}\\_.]+"
    r"|[_.]+"
    r"|\\"
)
# granularity "parts": a JSON escape | a run of letters | ONE digit | whitespace | a run of
# other punctuation | a lone backslash. Compound names become their parts and digits.
PARTS_PATTERN = (
    r"\\[nrtbf\"\\/u]"
    r"|\p{L}+"
    r"|\p{N}"
    r"|\s+"
    r"|[^\s\p{L}\p{N}\\]+"
    r"|\\"
)


@dataclass
class TokenizerConfig:
    """How the tokenizer is trained (the `tokenizer` part of a training stage's params)."""

    vocab_size: int = _f(8192, "upper bound on the vocabulary, special tokens and 256 bytes included")
    min_frequency: int = _f(1, "a merge must occur this often; 1 lets every seen word become a token")
    model_max_length: int = _f(2048, "the length the tokenizer reports as its maximum (warnings only)")
    granularity: Literal["parts", "names"] = _f("parts", "parts: words split at . _ - @ and digits one by one (every token "
                          "frequent); names: each seen compound name one token")
    learn_name_parts: bool = _f(True, "granularity=names: also train on the parts of compound names "
                                "(invoice, acme, pdf) so unseen combinations are a few whole parts")

    def __post_init__(self) -> None:
        check_choices(self, "tokenizer")
        floor = 256 + len(SPECIAL_TOKENS)
        if self.vocab_size <= floor:
            raise ValueError(f"tokenizer.vocab_size must exceed {floor} (256 bytes and "
                             f"{len(SPECIAL_TOKENS)} special tokens); got {self.vocab_size}")
        if self.min_frequency < 1:
            raise ValueError("tokenizer.min_frequency must be at least 1")


def pre_tokenizer(granularity: str = "parts") -> Any:
    """The pre-tokenizer described in the module docstring (split, then bytes to chars)."""
    from tokenizers import Regex, pre_tokenizers

    pattern = PARTS_PATTERN if granularity == "parts" else PRETOKEN_PATTERN
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        # use_regex=False: the split above already decided the pieces; GPT-2's regex would
        # cut names at every '.', '_' and '@' again.
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig | None = None) -> Any:
    """Train a byte-level BPE tokenizer on `texts`; returns a `PreTrainedTokenizerFast`.

    The result has pad/eos/unk set and the prompt markers as special tokens; it saves with
    `save_pretrained` and loads back with `transformers.AutoTokenizer.from_pretrained`.
    Training is deterministic for the same texts in the same order.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    cfg = cfg or TokenizerConfig()
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError("train_tokenizer: no text to train on (all texts were empty)")
    tk = Tokenizer(models.BPE(unk_token=UNK))
    tk.pre_tokenizer = pre_tokenizer(cfg.granularity)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    if cfg.granularity == "names" and cfg.learn_name_parts:
        texts = texts + name_parts(texts)
    tk.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        extra_special_tokens=list(MARKERS.values()),
        model_max_length=cfg.model_max_length,
        # The default clean-up deletes spaces before punctuation ("a ." -> "a."), which
        # would break decode(encode(text)) == text for tool calls.
        clean_up_tokenization_spaces=False,
    )


# A compound word as the pre-tokenizer sees it (Python `re`: [^\W_] is a letter or digit).
_COMPOUND = re.compile(r"[^\W_]+(?:[_.\-@:']+[^\W_]+)+")
_SEPARATORS = re.compile(r"([_.\-@:']+)")


def name_parts(texts: Sequence[str]) -> list[str]:
    """The parts of every compound word, space-separated (`invoice_acme.pdf` -> `invoice _
    acme . pdf`), one line per distinct compound, in first-seen order.

    Trained on beside the texts, they make BPE learn the parts as tokens too (a corpus of
    whole names otherwise merges straight to whole names, leaving no pieces in between),
    so an unseen combination of seen parts encodes as a few whole parts, not characters.
    """
    seen: dict[str, None] = {}
    for t in texts:
        for m in _COMPOUND.finditer(t):
            seen.setdefault(m.group(0))
    return [" ".join(p for p in _SEPARATORS.split(w) if p) for w in seen]


def ensure_markers(tokenizer: Any) -> int:
    """Add the prompt markers (and a pad token if missing) to a pretrained tokenizer.

    For a checkpoint's own tokenizer used in the compact prompt style. Returns how many
    tokens were added; the model's embeddings must then grow (`lm.model.build_model` does
    it when the tokenizer is larger than the model's vocabulary).
    """
    added = 0
    missing = [m for m in MARKERS.values() if tokenizer.convert_tokens_to_ids(m) in (None, tokenizer.unk_token_id)]
    if missing:
        added += tokenizer.add_special_tokens({"additional_special_tokens": missing},
                                              replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        added += tokenizer.add_special_tokens({"pad_token": PAD})
    return added


@dataclass
class TokenStats:
    """How many tokens the words of a vocabulary take (1 = whole)."""

    n: int                                  # distinct words measured
    whole: int                              # words that are exactly one token
    mean_tokens: float
    max_tokens: int
    worst: list[tuple[str, int]]            # the most-split words, most first (up to 10)

    @property
    def whole_fraction(self) -> float:
        return self.whole / self.n if self.n else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "whole": self.whole, "whole_fraction": round(self.whole_fraction, 4),
                "mean_tokens": round(self.mean_tokens, 4), "max_tokens": self.max_tokens,
                "worst": [list(w) for w in self.worst]}


def token_stats(tokenizer: Any, words: Sequence[str]) -> TokenStats:
    """Tokens per word for `words` (file names, people, addresses, dates...), encoded alone.

    A word is encoded on its own, which gives the same tokens as inside any text, because
    the pre-tokenizer isolates it there too.
    """
    uniq = sorted(set(words))
    counts = [(w, len(tokenizer.encode(w, add_special_tokens=False))) for w in uniq]
    if not counts:
        return TokenStats(0, 0, 0.0, 0, [])
    worst = sorted((c for c in counts if c[1] > 1), key=lambda c: (-c[1], c[0]))[:10]
    return TokenStats(
        n=len(counts),
        whole=sum(1 for _, k in counts if k == 1),
        mean_tokens=sum(k for _, k in counts) / len(counts),
        max_tokens=max(k for _, k in counts),
        worst=worst,
    )
