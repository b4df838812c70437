"""The reasoning branch: the textbook reasoner over-rationalises, policies anchor it, and the
`llm` backend talks to a real OpenAI-compatible HTTP endpoint."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import numpy as np
import polars as pl
import pytest
from tests.json_server import JsonServer

from distillery.config import PghsLLMConfig, PghsPoliciesConfig
from distillery.pghs.data import STRATEGY_FEATURES, to_cells, true_rates
from distillery.pghs.policies import mine_policies
from distillery.pghs.reason import (
    LLMError,
    LLMReasoner,
    MarketPrior,
    RulesReasoner,
    make_reasoner,
    parse_reply,
)

POLICY_CFG = PghsPoliciesConfig(max_bins=3, min_support=5, n_bootstrap=5, min_merchants=2)


@pytest.fixture(scope="module")
def setup(micro):
    frame, groups, world = micro
    prior = MarketPrior.from_rows(frame)
    policies = mine_policies(frame, ["order_rate"], POLICY_CFG)
    return frame, groups, world, prior, policies


def _discount_response(reasoner, world, group):
    m = world.merchant_frame().row(0, named=True)
    base = {"merchant_id": m["merchant_id"], "merchant_category": m["merchant_category"],
            "merchant_rating": m["merchant_rating"], "merchant_price_level": m["merchant_price_level"],
            "user_group": group, "delivery_fee": 3.0, "coupon_type": "none", "ad_spend": 0.0,
            "menu_breadth": 40}
    q = pl.DataFrame([{**base, "discount_depth": 0.0}, {**base, "discount_depth": 0.35}])
    pred = reasoner.predict(q)["pred_order_rate"].to_numpy()
    truth = true_rates(world, q)["order_rate"].to_numpy()
    return pred[1] / pred[0], truth[1] / truth[0]


def test_textbook_reasoner_over_rationalises_habitual_groups(setup):
    """Seniors are stated to be price-sensitive; most of their orders are habit. The
    policy-free reasoner predicts a far bigger discount response than the world has."""
    _, groups, world, prior, _ = setup
    predicted, true = _discount_response(RulesReasoner(groups, prior, ["order_rate"]), world,
                                         "seniors")
    assert predicted > 1.5 * true


def test_policies_bring_the_reasoner_closer_to_the_observed_rates(setup):
    frame, groups, _, prior, policies = setup
    cells = to_cells(frame)
    y = cells["order_rate"].to_numpy()
    errors = {}
    for name, pol in (("textbook", None), ("policies", policies)):
        pred = RulesReasoner(groups, prior, ["order_rate"], pol).predict(cells)["pred_order_rate"]
        errors[name] = float(np.mean(np.abs(pred.to_numpy() - y) / y))
    assert errors["policies"] < 0.7 * errors["textbook"]


def test_parse_reply_accepts_fenced_json_and_rejects_bad_rates():
    ok = parse_reply('```json\n{"groups": {"a": {"order_rate": 0.02}}}\n```', ["a"], ["order_rate"])
    assert ok == {"a": {"order_rate": 0.02}}
    with pytest.raises(ValueError, match="group 'b' missing"):
        parse_reply('{"groups": {"a": {"order_rate": 0.02}}}', ["a", "b"], ["order_rate"])
    with pytest.raises(ValueError, match=r"rate in \(0, 1\]"):
        parse_reply('{"groups": {"a": {"order_rate": 3}}}', ["a"], ["order_rate"])
    with pytest.raises(ValueError, match="no JSON"):
        parse_reply("I think about 2%", ["a"], ["order_rate"])


class _Endpoint(JsonServer):
    """A real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions protocol.

    It stands in for an external LLM endpoint (vLLM, Ollama, `distillery serve`): it reads
    the group names from the prompt and answers deterministically, 0.02 per group when the
    prompt carries decision policies and 0.05 when it does not. `bad_replies` makes the
    first N answers unusable, to exercise the retry.
    """

    def __init__(self, bad_replies: int = 0) -> None:
        self.prompts: list[list[dict]] = []
        self.bad_replies = bad_replies
        super().__init__(self._answer)

    def _answer(self, headers: dict[str, str], body: dict) -> tuple[int, dict, dict[str, str]]:
        self.prompts.append(body["messages"])
        user = body["messages"][1]["content"]
        groups = re.findall(r"^- (\w+): ", user, flags=re.M)
        rate = 0.02 if "Decision policies" in user else 0.05
        if self.bad_replies > 0:
            self.bad_replies -= 1
            content = "Roughly two percent for everyone."
        else:
            content = json.dumps({"groups": {g: {"order_rate": rate} for g in groups}})
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": content}}],
                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        return 200, reply, {}


@pytest.fixture
def endpoint() -> Iterator[_Endpoint]:
    with _Endpoint() as e:
        yield e


def _cells(frame: pl.DataFrame, n_strategies: int = 3) -> pl.DataFrame:
    cells = to_cells(frame)
    keep = cells["strategy_id"].unique().sort().head(n_strategies)
    return cells.filter(pl.col("strategy_id").is_in(keep))


def test_llm_backend_one_request_per_merchant_strategy_with_and_without_policies(setup, endpoint):
    frame, groups, _, prior, policies = setup
    cells = _cells(frame)
    cfg = PghsLLMConfig(base_url=endpoint.base_url, model="stand-in", concurrency=2, max_retries=0)
    plain = make_reasoner("llm", groups, prior, ["order_rate"], None, cfg, progress=False)
    guided = make_reasoner("llm", groups, prior, ["order_rate"], policies, cfg, progress=False)
    assert isinstance(plain, LLMReasoner)
    a = plain.predict(cells)["pred_order_rate"].to_list()
    b = guided.predict(cells)["pred_order_rate"].to_list()
    assert a == [0.05] * cells.height and b == [0.02] * cells.height
    n_requests = cells.select("merchant_id", "strategy_id").unique().height
    assert len(endpoint.prompts) == 2 * n_requests
    guided_prompt = endpoint.prompts[-1][1]["content"]
    assert "habitual level" in guided_prompt and "students" in guided_prompt
    assert endpoint.prompts[-1][0]["content"].startswith("You simulate")
    # the same question twice is answered from the cache, not the endpoint
    plain.predict(cells)
    assert len(endpoint.prompts) == 2 * n_requests


def test_llm_backend_retries_once_then_fails_loudly(setup):
    frame, groups, _, prior, _ = setup
    cells = _cells(frame, 1)
    with _Endpoint(bad_replies=1) as e:
        cfg = PghsLLMConfig(base_url=e.base_url, concurrency=1, max_retries=0)
        out = LLMReasoner(groups, prior, ["order_rate"], cfg, progress=False).predict(cells)
        assert out["pred_order_rate"].to_list() == [0.05] * cells.height
        assert "could not be used" in e.prompts[1][-1]["content"]
    with _Endpoint(bad_replies=2) as e:
        cfg = PghsLLMConfig(base_url=e.base_url, concurrency=1, max_retries=0)
        with pytest.raises(LLMError, match="no JSON object"):
            LLMReasoner(groups, prior, ["order_rate"], cfg, progress=False).predict(cells)


def test_unknown_backend_is_refused(setup):
    _, groups, _, prior, _ = setup
    with pytest.raises(ValueError, match="'rules' or 'llm'"):
        make_reasoner("oracle", groups, prior, ["order_rate"])


def test_textbook_features_come_from_the_strategy(setup):
    frame, groups, _, prior, _ = setup
    cells = to_cells(frame).head(4)
    more_ads = cells.with_columns(pl.col("ad_spend") + 500)
    r = RulesReasoner(groups, prior, ["ctr"])
    assert (r.predict(more_ads)["pred_ctr"].to_numpy() > r.predict(cells)["pred_ctr"].to_numpy()).all()
    assert set(STRATEGY_FEATURES) <= set(cells.columns)
