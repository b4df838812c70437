"""`distillery serve` over real HTTP on 127.0.0.1, driven by the official `openai` client.

A tiny Llama with a tokenizer trained here stands in for a trained model: the point is
that the server is a faithful window onto the model (same prompt ids, same tokens, same
actions as running it in-process), not that the model is any good.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch

from distillery.agents.prompts import (
    MARKERS,
    PromptConfig,
    render_compact,
    render_compact_ids,
    render_messages,
)
from distillery.envs.actions import format_call
from distillery.envs.base import tool_specs
from distillery.serve import (
    PROMPT_NOTES_HEADER,
    Engine,
    RunningServer,
    compact_prompt_notes,
    messages_to_context,
    serve_in_thread,
)
from distillery.types import Context, Task, ToolCall, Turn

pytestmark = pytest.mark.slow

SPECS = tool_specs("stage")
NAME = "tiny"


# ---------------------------------------------------------------------------------------
# A tiny compact-style model
# ---------------------------------------------------------------------------------------


def corpus() -> list[str]:
    calls = [format_call(ToolCall(s.name, {p.name: f"{p.name} one" for p in s.params})) for s in SPECS]
    return ["Task: file the invoice under finance and tell Ann.", "Lessons from earlier work:",
            "downloads/\n  invoice_2024.pdf\n  notes.txt", "ok: moved", "error: no such file",
            *calls] * 5


def build_tokenizer(texts: list[str]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<unk>", "<eos>", *MARKERS.values()]
    tk.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=500, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>",
                                   eos_token="<eos>", additional_special_tokens=list(MARKERS.values()))


def build_model(tok: Any, seed: int = 0) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    # A wide init makes the untrained model's next-token distribution peaked, so greedy
    # decoding has no near-ties that float rounding of different batch shapes could flip.
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      initializer_range=0.5, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, bos_token_id=None)
    return LlamaForCausalLM(cfg).eval()


CARD = {"prompt": {"style": "compact", "max_prompt_tokens": 256, "max_observation_tokens": 40,
                   "max_experience_tokens": 48, "max_history_turns": 4}}


@pytest.fixture(scope="module")
def engine() -> Engine:
    tok = build_tokenizer(corpus())
    return Engine(build_model(tok), tok, CARD, name=NAME, device="cpu")


@pytest.fixture(scope="module")
def server(engine: Engine) -> Iterator[RunningServer]:
    with serve_in_thread(engine) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0) as c:
        yield c


def ctx_of(i: int, n_turns: int = 0, experience: tuple[str, ...] = (), obs: str = "") -> Context:
    task = Task(task_id=f"t{i}", family="f", split="test", profile="default", hint="",
                instruction=f"File invoice {i} under finance and tell Ann.", initial_state={},
                reference_solution=[], checks=[])
    calls = [format_call(ToolCall(s.name, {p.name: f"v{i}{j}" for p in s.params}))
             for j, s in enumerate(SPECS[:n_turns])]
    history = [Turn(f"observation {i}.{j}", a) for j, a in enumerate(calls)]
    return Context(episode_id=f"e{i}", task=task, t=n_turns,
                   observation=obs or f"downloads/\n  invoice_{i}.pdf", history=history,
                   experience=list(experience))


def chat(client: openai.OpenAI, messages: list[dict[str, Any]], **kw: Any) -> Any:
    return client.chat.completions.create(model=NAME, messages=messages, **{"temperature": 0, **kw})


# ---------------------------------------------------------------------------------------
# Prompt inversion: the server renders what HFPolicy renders
# ---------------------------------------------------------------------------------------

CONTEXTS = [
    ctx_of(0),
    ctx_of(1, n_turns=2),
    ctx_of(2, n_turns=3, experience=("Invoices go to finance/.", "Ann wants a short note\nsigned Sam.")),
    ctx_of(3, n_turns=6, obs="a long listing\n\n" + " ".join(f"file_{k}.txt" for k in range(300))),
]


@pytest.mark.parametrize("ctx", CONTEXTS, ids=lambda c: c.episode_id)
def test_messages_invert_to_the_context_they_came_from(ctx):
    back = messages_to_context(render_messages(ctx, SPECS))
    assert back.task.instruction == ctx.task.instruction
    assert (back.history, back.observation) == (ctx.history, ctx.observation)
    assert "\n".join(back.experience) == "\n".join(ctx.experience)


@pytest.mark.parametrize("ctx", CONTEXTS, ids=lambda c: c.episode_id)
def test_server_prompt_ids_equal_hf_prompt_ids(engine, ctx):
    # The last context overflows the budget: old turns dropped, observation trimmed, as in HF.
    expected = render_compact_ids(ctx, engine.tok, PromptConfig(**CARD["prompt"]))
    assert engine.render(render_messages(ctx, SPECS), None) == expected


def test_tool_call_history_renders_as_its_canonical_text(engine):
    ctx = ctx_of(5, n_turns=1)
    msgs = render_messages(ctx, SPECS)
    from distillery.agents.openai import tools_messages

    assert engine.render(tools_messages(msgs, SPECS), None) == engine.render(msgs, None)


LONG_PAST = Context(episode_id="e9", task=CONTEXTS[1].task, t=2, observation="ok: moved",
                    history=[Turn(" ".join(f"file_{k}.txt" for k in range(40)), CONTEXTS[1].history[0].action),
                             CONTEXTS[1].history[1]], experience=[])


@pytest.mark.parametrize("turns", [0, 1, 4])
@pytest.mark.parametrize("ctx", [*CONTEXTS, LONG_PAST], ids=lambda c: c.episode_id)
def test_prompt_notes_say_what_the_compact_prompt_left_out(engine, ctx, turns):
    cfg = PromptConfig(**{**CARD["prompt"], "max_history_turns": turns})
    ids, cuts = render_compact(ctx, engine.tok, cfg)
    assert ids == render_compact_ids(ctx, engine.tok, cfg)
    notes = compact_prompt_notes(render_messages(ctx, SPECS), None, ctx, cuts)
    obs_marker = engine.tok.convert_tokens_to_ids(MARKERS["observation"])
    kept = ids.count(obs_marker) - 1
    assert (f"history-cut={kept}/{len(ctx.history)}" in notes) == (kept < len(ctx.history))
    current = ids[len(ids) - 1 - ids[::-1].index(obs_marker) + 1:-1]
    whole = engine.tok.encode(ctx.observation, add_special_tokens=False)
    assert ("observation-cut" in notes) == (current != whole)
    assert "system-dropped" in notes   # render_messages' system text: description and tools
    if ctx is LONG_PAST:   # its first observation is over max_observation_tokens, kept only at 4
        assert ("past-observations-cut=1" in notes) == (turns > 1)


def test_an_assistant_message_beyond_one_action_is_noted(engine):
    call = {"id": "c1", "type": "function", "function": {"name": "list_dir", "arguments": "{}"}}
    msgs = [{"role": "user", "content": "Task: x\n\ny"},
            {"role": "assistant", "content": None, "tool_calls": [call, {**call, "id": "c2"}]},
            {"role": "tool", "content": "ok", "tool_call_id": "c1"}]
    assert engine.render_noted(msgs, None)[1] == ["assistant-content-dropped"]
    msgs[1] = {"role": "assistant", "content": "Let me look.", "tool_calls": [call]}
    assert engine.render_noted(msgs, None)[1] == ["assistant-content-dropped"]
    msgs[1] = {"role": "assistant", "content": None, "tool_calls": [call]}
    assert engine.render_noted(msgs, None)[1] == []


def test_prompt_notes_reach_the_client_as_a_header_and_the_log_once(engine, caplog):
    lessons = {"role": "system", "content": "Lessons from earlier work for this user:\n- Invoices go to finance/."}
    user = {"role": "user", "content": "Task: file the invoice\n\ndownloads/"}
    tools = [{"type": "function", "function": {"name": "list_dir", "parameters": {}}}]
    with serve_in_thread(engine) as srv, openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0) as c:
        def notes(messages: list[dict[str, Any]], **kw: Any) -> str | None:
            raw = c.chat.completions.with_raw_response.create(
                model=NAME, messages=messages, max_tokens=2, temperature=0, **kw)
            raw.parse()
            return raw.headers.get(PROMPT_NOTES_HEADER)

        with caplog.at_level("INFO", logger="distillery.serve"):
            assert notes([lessons, user]) is None   # nothing lost: no header
            assert notes([{"role": "developer", "content": "Be terse."}, user]) == "system-dropped"
            assert notes([user], tools=tools, stream=True) == "tools-not-in-prompt"
            assert notes([{"role": "system", "content": "Be terse."}, user], tools=tools) == \
                "system-dropped, tools-not-in-prompt"
            history = render_messages(CONTEXTS[3], SPECS)
            assert notes(history) == "system-dropped, observation-cut, history-cut=0/6"
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert [w.split(":")[0] for w in warned] == [
        "prompt note system-dropped", "prompt note tools-not-in-prompt", "prompt note observation-cut",
        "prompt note history-cut"]
    assert all(PROMPT_NOTES_HEADER in w for w in warned)
    logged = [r.getMessage() for r in caplog.records if "/v1/chat/completions 200" in r.getMessage()]
    assert "notes=" not in logged[0] and logged[1].endswith("notes=system-dropped")


# ---------------------------------------------------------------------------------------
# The API
# ---------------------------------------------------------------------------------------


def test_models_and_health(client, server):
    [m] = client.models.list().data
    assert (m.id, m.owned_by) == (NAME, "distillery")
    assert client.models.retrieve(NAME) == m
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("gpt-9")
    assert e.value.body["code"] == "model_not_found" and "serves 'tiny'" in e.value.body["message"]
    health = httpx.get(server.base_url.removesuffix("/v1") + "/health").json()
    assert health["status"] == "ok" and health["prompt_style"] == "compact"


def test_a_model_named_with_slashes_can_be_retrieved(engine):
    named = Engine(engine.model, engine.tok, CARD, name="models/warmup", device="cpu")
    with serve_in_thread(named) as srv, openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0) as c:
        assert c.models.retrieve("models/warmup").id == "models/warmup"   # sent as models%2Fwarmup
        raw = httpx.get(srv.base_url + "/models/models/warmup")
        assert raw.status_code == 200 and [raw.json()] == httpx.get(srv.base_url + "/models").json()["data"]
        assert httpx.get(srv.base_url + "/models/models").status_code == 404


def test_completion_and_stream_agree(client, engine):
    msgs = render_messages(CONTEXTS[1], SPECS)
    r = chat(client, msgs, max_tokens=24)
    assert r.object == "chat.completion" and r.model == NAME and r.id.startswith("chatcmpl-")
    assert r.created > 0 and r.choices[0].finish_reason in ("stop", "length")
    prompt = engine.render(msgs, None)
    assert r.usage.prompt_tokens == len(prompt)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    chunks = list(chat(client, msgs, max_tokens=24, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == r.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [r.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_completion_is_what_generate_gives_in_process(client, engine):
    from distillery.lm.generate import SamplingConfig, generate

    msgs = render_messages(CONTEXTS[2], SPECS)
    r = chat(client, msgs, max_tokens=30, logprobs=True)
    [g] = generate(engine.model, [engine.render(msgs, None)], stop_ids=engine.stop_ids,
                   pad_id=engine.pad_id, sampling=SamplingConfig(0.0, 1.0, 30))
    ids = g.token_ids[:-1] if g.stopped else g.token_ids
    assert r.choices[0].message.content == engine.tok.decode(ids, skip_special_tokens=False)
    assert r.usage.completion_tokens == len(g.token_ids)
    assert r.choices[0].finish_reason == ("stop" if g.stopped else "length")
    lps = [t.logprob for t in r.choices[0].logprobs.content]
    assert lps == pytest.approx(g.logprobs, abs=1e-5)


def test_seeded_sampling_is_reproducible(client):
    msgs = render_messages(CONTEXTS[0], SPECS)
    a, b, c = (chat(client, msgs, temperature=1.0, seed=s, max_tokens=16).choices[0].message.content
               for s in (11, 11, 12))
    assert a == b and a != c


def test_stop_strings_and_max_tokens(client):
    msgs = render_messages(CONTEXTS[0], SPECS)
    full = chat(client, msgs, max_tokens=40).choices[0].message.content
    assert len(full) > 6
    stop = full[3:5]
    r = chat(client, msgs, max_tokens=40, stop=[stop])
    assert r.choices[0].message.content == full[: full.index(stop)]
    assert r.choices[0].finish_reason == "stop"
    short = chat(client, msgs, max_tokens=2)
    assert short.usage.completion_tokens <= 2


def test_concurrent_requests_are_batched_and_unchanged(client, server):
    prompts = [render_messages(ctx_of(10 + i, n_turns=i % 3), SPECS) for i in range(8)]
    alone = [chat(client, m, max_tokens=20).choices[0].message.content for m in prompts]
    before = httpx.get(server.base_url.removesuffix("/v1") + "/health").json()
    together: list[str | None] = [None] * len(prompts)
    barrier = threading.Barrier(len(prompts))

    def go(i: int) -> None:
        barrier.wait()
        together[i] = chat(client, prompts[i], max_tokens=20).choices[0].message.content

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = httpx.get(server.base_url.removesuffix("/v1") + "/health").json()
    assert together == alone
    assert after["batches"] - before["batches"] < len(prompts)   # some shared a generate call


@pytest.mark.parametrize("kw, param", [
    ({"n": 2}, "n"), ({"n": 0}, "n"), ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"temperature": 3.0}, "temperature"), ({"logprobs": True, "stream": True}, "logprobs"),
    ({"tool_choice": "required"}, "tool_choice"), ({"tool_choice": "banana"}, "tool_choice"),
    ({"tool_choice": {"type": "function", "function": {"name": "list_dir"}}}, "tool_choice"),
    ({"extra_body": {"functions": [{"name": "f", "parameters": {}}]}}, "functions"),
    ({"extra_body": {"function_call": "auto"}}, "function_call"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
])
def test_unsupported_or_invalid_parameters_are_openai_style_400s(client, kw, param):
    with pytest.raises(openai.BadRequestError) as e:
        resp = chat(client, [{"role": "user", "content": "Task: x\n\ny"}], **kw)
        list(resp) if kw.get("stream") else None
    err = e.value.body
    assert err["param"] == param and err["type"] == "invalid_request_error" and err["message"]


@pytest.mark.parametrize("kw", [{"tool_choice": "auto"}, {"tool_choice": "none"},
                                {"response_format": {"type": "text"}}])
def test_harmless_values_of_those_fields_are_accepted(client, kw):
    assert chat(client, [{"role": "user", "content": "Task: x\n\ny"}], max_tokens=2, **kw).choices


def test_bad_conversations_and_unknown_models(client):
    with pytest.raises(openai.BadRequestError, match="last message must be a user message"):
        chat(client, [{"role": "user", "content": "Task: x\n\ny"}, {"role": "assistant", "content": "z"}])
    with pytest.raises(openai.NotFoundError, match="serves 'tiny'"):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])


ALTERNATING_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' and not loop.first %}"
    "{{ raise_exception('System message must be first') }}{% endif %}"
    "{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")


def test_a_conversation_the_chat_template_refuses_is_a_400_not_a_500():
    # Real templates (Mistral, Gemma, Llama 2) refuse some role orders with raise_exception;
    # that is the client's request, not a server fault (a 500 would also be retried).
    tok = build_tokenizer(corpus())
    tok.chat_template = ALTERNATING_TEMPLATE
    chat_engine = Engine(build_model(tok), tok, {"prompt": {"style": "chat"}}, name=NAME, device="cpu")
    with serve_in_thread(chat_engine) as srv, openai.OpenAI(base_url=srv.base_url, api_key="unused",
                                                            max_retries=0) as c:
        assert chat(c, [{"role": "user", "content": "hi"}], max_tokens=2).choices
        with pytest.raises(openai.BadRequestError, match="System message must be first") as e:
            chat(c, [{"role": "user", "content": "hi"}, {"role": "system", "content": "x"}], max_tokens=2)
        assert e.value.body["param"] == "messages" and e.value.body["type"] == "invalid_request_error"


def test_api_key_is_enforced(engine):
    msgs = [{"role": "user", "content": "Task: x\n\ny"}]
    with serve_in_thread(engine, api_key="s3cret") as srv:
        with openai.OpenAI(base_url=srv.base_url, api_key="wrong", max_retries=0) as bad:
            with pytest.raises(openai.AuthenticationError):
                bad.chat.completions.create(model=NAME, messages=msgs, max_tokens=2)
            with pytest.raises(openai.AuthenticationError):
                bad.models.list()
        no_key = httpx.post(srv.base_url + "/chat/completions", json={"model": NAME, "messages": msgs})
        assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(srv.base_url.removesuffix("/v1") + "/health").status_code == 200
        with openai.OpenAI(base_url=srv.base_url, api_key="s3cret", max_retries=0) as good:
            assert good.chat.completions.create(model=NAME, messages=msgs, max_tokens=2).choices


# ---------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "distillery.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_cli_help_and_clear_startup_errors(tmp_path: Path):
    help_ = _cli("serve", "--help")
    assert help_.returncode == 0
    for opt in ("--host", "--port", "--api-key", "--max-batch"):
        assert opt in help_.stdout
    missing = _cli("serve", str(tmp_path / "nope"))
    assert missing.returncode != 0 and "no such directory" in missing.stderr
    (tmp_path / "empty").mkdir()
    not_model = _cli("serve", str(tmp_path / "empty"))
    assert not_model.returncode != 0 and "not a model directory" in not_model.stderr


def test_the_default_name_is_the_model_dir_without_a_trailing_slash(engine, tmp_path: Path):
    from distillery.lm.model import save_model_dir
    from distillery.serve import load_engine

    save_model_dir(tmp_path / "m", engine.model, engine.tok, CARD)
    assert load_engine(f"{tmp_path / 'm'}/", device="cpu").name == str(tmp_path / "m")
    assert load_engine(tmp_path / "m", name="given/", device="cpu").name == "given/"


def test_startup_mistakes_are_one_line_errors(tmp_path: Path):
    from typer.testing import CliRunner

    from distillery.cli import app
    from distillery.serve import ServeError, _bind, load_engine

    runner = CliRunner()
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    for card, says in (("{not json", "card.json: not valid JSON"), ("[1]", "card.json: expected a JSON object"),
                       ('{"prompt": "compact"}', "prompt must be an object")):
        (model / "card.json").write_text(card)
        with pytest.raises(ServeError, match=says):
            load_engine(model)
    (model / "card.json").unlink()
    with pytest.raises(ServeError, match="m: cannot load the config"):     # transformers' own error kind
        load_engine(model)
    r = runner.invoke(app, ["serve", str(model)])
    assert r.exit_code == 2 and "cannot load the config (config.json)" in r.output, r.output
    tok = build_tokenizer(corpus())
    with pytest.raises(ServeError, match="card.json: prompt: unknown setting 'bogus'"):
        Engine(build_model(tok), tok, {"prompt": {"style": "compact", "bogus": 1}}, device="cpu")
    for args, says in ((["--port", "70000"], "--port"), (["--port", "-1"], "--port"),
                       (["--log-level", "verbose"], "--log-level verbose"), (["--device", "gpu0"], "device 'gpu0'")):
        r = runner.invoke(app, ["serve", str(model), *args])
        assert r.exit_code == 2 and says in r.output, r.output
    with pytest.raises(ServeError, match="could not be resolved"):
        _bind("no.such.host.invalid", 0)
    # 192.0.2.1 is a documentation address (RFC 5737): no interface has it.
    with pytest.raises(ServeError, match="no network interface of this machine has that address: check --host"):
        _bind("192.0.2.1", 0)
    busy = _bind("127.0.0.1", 0)
    with busy, pytest.raises(ServeError, match="Address already in use; is another server running there"):
        _bind("127.0.0.1", busy.getsockname()[1])
