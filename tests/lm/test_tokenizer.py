"""The environment tokenizer: exact round trips and names as whole tokens."""

from __future__ import annotations

import random
import re

import pytest
from transformers import AutoTokenizer

from distillery.lm.markers import MARKERS
from distillery.lm.tokenizer import (
    EOS,
    PAD,
    UNK,
    TokenizerConfig,
    ensure_markers,
    token_stats,
    train_tokenizer,
)

STEMS = ["invoice", "report", "budget", "notes", "minutes", "contract", "receipt", "draft",
         "summary", "plan", "photo", "slides"]
TAGS = ["acme", "2024", "q3", "final", "globex", "team"]
EXTS = ["pdf", "txt", "docx", "xlsx", "png"]
FOLDERS = ["downloads", "documents", "finance", "archive", "projects", "photos", "travel",
           "taxes", "legal", "hr", "inbox_exports", "shared-drive"]
FIRST = ["ann", "bob", "chen", "dana", "eli", "fatima", "gus", "hana", "ivan", "jo"]
LAST = ["lee", "smith", "wu", "okafor"]


def vocabulary(seed: int = 0) -> dict[str, list[str]]:
    rng = random.Random(seed)
    files = sorted({f"{rng.choice(STEMS)}_{rng.choice(TAGS)}.{rng.choice(EXTS)}" for _ in range(400)})[:60]
    people = [f"{f.title()} {s.title()}" for f in FIRST for s in LAST]
    emails = [f"{f}.{s}@{rng.choice(['acme.com', 'globex.org'])}" for f in FIRST for s in LAST]
    dates = sorted({f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}" for _ in range(40)})[:30]
    return {"files": files, "folders": FOLDERS, "people": people, "emails": emails, "dates": dates}


def corpus(v: dict[str, list[str]], seed: int = 0) -> list[str]:
    """Listings, instructions and tool calls that mention every name at least once."""
    rng = random.Random(seed)
    out = []
    for f in v["files"]:
        folder = rng.choice(v["folders"])
        out.append(f"{folder}/\n  {f}\n  {rng.choice(v['files'])}")
        out.append(f'move_file(src="{folder}/{f}", dst="{rng.choice(v["folders"])}/")')
    for p, e in zip(v["people"], v["emails"], strict=True):
        d = rng.choice(v["dates"])
        out.append(f"Send {p} the {rng.choice(STEMS)} before {d}. Contact: {p} <{e}>")
        out.append(f'send_mail(to="{e}", subject="Re: {rng.choice(STEMS)}", body="Hi {p.split()[0]},\\n\\nSee you.")')
    for d in v["dates"]:
        out.append(f'create_event(title="Review", date="{d}", time="14:30")')
    return out


@pytest.fixture(scope="module")
def vocab() -> dict[str, list[str]]:
    return vocabulary()


@pytest.fixture(scope="module")
def tok(vocab):
    return train_tokenizer(corpus(vocab), TokenizerConfig(vocab_size=4096, granularity="names"))


@pytest.fixture(scope="module")
def parts_tok(vocab):
    return train_tokenizer(corpus(vocab), TokenizerConfig(vocab_size=4096))


ROUND_TRIP = [
    'send_mail(to="ann.lee@acme.com", subject="Budget", body="See you.")',
    'send_mail(to="ann.lee@acme.com", subject="Budget", body="See you.\\n\\nCheers, Sam")',
    "downloads/\n  invoice_acme.pdf\n\n\tnotes.txt  \n",
    "  leading and trailing spaces  ",
    'quotes "inside" and \'single\' and a \\ backslash and a = sign, (parens) [brackets] {braces}',
    "unseen: Zürich café — ☃ 日本語 🚀 budget_q3_globex.xlsx 2031-12-31 at 09:05",
    f"{MARKERS['instruction']}Move it.{MARKERS['observation']}ok{MARKERS['action']}finish(){MARKERS['end']}",
]


@pytest.mark.parametrize("granularity", ["names", "parts"])
@pytest.mark.parametrize("text", ROUND_TRIP)
def test_decode_encode_round_trips_exactly(tok, parts_tok, granularity, text):
    t = tok if granularity == "names" else parts_tok
    ids = t.encode(text, add_special_tokens=False)
    assert t.decode(ids, skip_special_tokens=False) == text
    assert t.unk_token_id not in ids, "byte-level BPE must never need the unknown token"


def test_parts_granularity_splits_names_into_frequent_parts_and_digits(parts_tok, vocab):
    pieces = parts_tok.convert_ids_to_tokens(parts_tok.encode("ann.lee@acme.com", add_special_tokens=False))
    assert pieces == ["ann", ".", "lee", "@", "acme", ".", "com"]
    # digits one by one: 2024-05-03 is ten tokens, each of them frequent
    dates = parts_tok.encode("2024-05-03", add_special_tokens=False)
    assert [parts_tok.decode([i]) for i in dates] == list("2024-05-03")
    # every word part of the vocabulary is a single token, and the vocabulary stays small
    parts = {p for w in vocab["files"] + vocab["emails"] for p in re.split(r"[^A-Za-z]+", w) if p}
    stats = token_stats(parts_tok, sorted(parts))
    assert stats.whole == stats.n, stats.worst
    assert len(parts_tok) < len(train_tokenizer(corpus(vocab), TokenizerConfig(vocab_size=4096,
                                                                           granularity="names")))


def test_every_name_seen_in_training_is_one_token(tok, vocab):
    words = [w for k in ("files", "folders", "emails", "dates") for w in vocab[k]]
    words += [part for p in vocab["people"] for part in p.split()]
    stats = token_stats(tok, words)
    # Recorded in lm/tokenizer.py's docstring: every seen name is whole.
    assert stats.n == 156
    assert stats.whole == stats.n, f"split names: {stats.worst}"
    assert stats.max_tokens == 1


def test_names_are_the_same_token_in_observations_and_actions(tok, vocab):
    name = vocab["files"][0]
    tid = tok.convert_tokens_to_ids(name)
    assert tid != tok.unk_token_id
    in_listing = tok.encode(f"downloads/\n  {name}\n", add_special_tokens=False)
    in_call = tok.encode(f'read_file(path="downloads/{name}")', add_special_tokens=False)
    in_prose = tok.encode(f"Open {name}.", add_special_tokens=False)
    assert tid in in_listing and tid in in_call and tid in in_prose


def test_an_unseen_combination_of_seen_parts_is_whole_parts(tok, vocab):
    seen = set(vocab["files"]) | set(vocab["emails"])
    unseen = [n for n in ("slides_globex_q3.xlsx", "budget_team_final.png", "jo.wu@acme.org") if n not in seen]
    for name in unseen:
        pieces = tok.convert_ids_to_tokens(tok.encode(name, add_special_tokens=False))
        # Each part and separator is at most one token (BPE may also fuse neighbours).
        n_parts = len([p for p in re.split(r"([_.@])", name) if p])
        assert len(pieces) <= n_parts, (name, pieces)


def test_special_tokens_and_markers_are_single_ids(tok):
    assert tok.pad_token == PAD and tok.eos_token == EOS and tok.unk_token == UNK
    ids = {tok.convert_tokens_to_ids(m) for m in MARKERS.values()}
    assert len(ids) == len(MARKERS) and tok.unk_token_id not in ids
    # Marker text inside ordinary text is the marker token, not its characters.
    assert tok.encode(MARKERS["action"], add_special_tokens=False) == [tok.convert_tokens_to_ids(MARKERS["action"])]


def test_save_and_auto_load(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    back = AutoTokenizer.from_pretrained(tmp_path)
    text = ROUND_TRIP[1] + MARKERS["end"]
    assert back.encode(text, add_special_tokens=False) == tok.encode(text, add_special_tokens=False)
    assert back.decode(back.encode(text, add_special_tokens=False)) == text
    assert (back.pad_token_id, back.eos_token_id) == (tok.pad_token_id, tok.eos_token_id)
    assert len(back) == len(tok)


def test_training_is_deterministic(vocab):
    a = train_tokenizer(corpus(vocab), TokenizerConfig(vocab_size=1024))
    b = train_tokenizer(corpus(vocab), TokenizerConfig(vocab_size=1024))
    assert a.get_vocab() == b.get_vocab()


def test_bad_config_and_empty_corpus_fail_clearly():
    with pytest.raises(ValueError, match="vocab_size must exceed"):
        TokenizerConfig(vocab_size=100)
    with pytest.raises(ValueError, match="granularity"):
        TokenizerConfig(granularity="chars")
    with pytest.raises(ValueError, match="no text"):
        train_tokenizer(["", ""])


def test_ensure_markers_extends_a_foreign_tokenizer(tok, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    foreign = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]")
    added = ensure_markers(foreign)
    assert added == len(MARKERS) + 1            # the markers and a pad token
    assert foreign.pad_token is not None
    assert all(foreign.convert_tokens_to_ids(m) != foreign.unk_token_id for m in MARKERS.values())
    assert ensure_markers(foreign) == 0
