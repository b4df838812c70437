"""The drafting loop end to end with a model trained here, served by `distillery serve`.

A tiny Llama (a tokenizer trained on the drafting prompts, two layers) is trained for a few
seconds to answer the drafting prompt with one short valid draft, saved as a model
directory, and served by the real `distillery serve` command; `distillery tasks draft`
talks to it over HTTP. Its first draft is kept; for the other hints it writes the same task
again, which the loop rejects as a duplicate, and its replies to the feedback (which it was
never trained on) are rejected too: the loop runs end to end with a real model behind it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import polars as pl
import pytest
import torch
from tests.conftest import REPO
from tests.tasks.drafts import SMALL_INVOICE

from distillery.agents.prompts import MARKERS, action_ids
from distillery.tasks.draft_prompts import SYSTEM, first_messages, repair_message
from distillery.tasks.schema import Reason

pytestmark = pytest.mark.slow

HINTS = ["the user wants an invoice filed", "tidy the inbox", "book a call with a colleague"]
CARD = {"prompt": {"style": "compact", "max_prompt_tokens": 3500, "max_observation_tokens": 200,
                   "max_experience_tokens": 48, "max_history_turns": 2}}
TARGET = json.dumps(SMALL_INVOICE, separators=(",", ":"))


def _tokenizer() -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [first_messages(h, "stage")[1]["content"] for h in HINTS] + \
        [SYSTEM, TARGET, repair_message([Reason("duplicate", "the same task")])["content"]]
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<unk>", "<eos>", *MARKERS.values()]
    tk.train_from_iterator(texts * 3, trainers.BpeTrainer(vocab_size=1200, special_tokens=specials,
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>",
                                   additional_special_tokens=list(MARKERS.values()))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from distillery.lm.generate import SamplingConfig, generate
    from distillery.lm.model import save_model_dir
    from distillery.serve import Engine

    tok = _tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=4096, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, bos_token_id=None))
    # Each hint's prompt exactly as the server will build it, then the draft and the end marker.
    engine = Engine(model, tok, CARD, name="tiny", device="cpu")
    target = action_ids(tok, TARGET)
    examples = []
    for hint in HINTS:
        prompt = engine.render(first_messages(hint, "stage"), None)
        labels = torch.tensor([[-100] * len(prompt) + target])
        examples.append((torch.tensor([prompt + target]), labels))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses: list[float] = []
    for step in range(300):
        ids, labels = examples[step % len(examples)]
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
        if step >= len(examples) and max(losses[-len(examples):]) < 0.005:
            break
    model.eval()
    assert max(losses[-len(examples):]) < losses[0] / 100, losses[::10]
    for ids, labels in examples:   # greedy decoding gives the draft back for every hint
        prompt = ids[0, : int((labels[0] == -100).sum())].tolist()
        (out,) = generate(model, [prompt], stop_ids=engine.stop_ids, pad_id=engine.pad_id,
                          sampling=SamplingConfig(0.0, 1.0, len(target) + 8), seeds=[0])
        assert out.token_ids == target, tok.decode(out.token_ids)
    return save_model_dir(tmp_path_factory.mktemp("tiny") / "model", model, tok, CARD)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def served(model_dir: Path) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "distillery.cli", "serve", str(model_dir), "--port", str(port),
                             "--model-name", "tiny", "--device", "cpu", "--log-level", "warning"],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"distillery serve did not come up:\n{proc.stdout.read() if proc.stdout else ''}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_loop_runs_end_to_end_against_distillery_serve(served: str, tmp_path: Path):
    args = [a for h in HINTS for a in ("--hint", h)]
    p = subprocess.run(
        [sys.executable, "-m", "distillery.cli", "tasks", "draft", "--base-url", served, "--model", "tiny", *args,
         "--max-repairs", "1", "--max-tokens", "400", "--timeout", "300", "--no-progress"],
        cwd=tmp_path, env={**_env(), "DISTILLERY_SANDBOX": str(tmp_path)}, capture_output=True, text=True,
        timeout=600)
    print(p.stdout)   # the measured acceptance rate, repair rounds and tokens per kept task
    assert p.returncode == 0, p.stderr[-3000:]
    attempts = pl.read_parquet(tmp_path / "data/tasks/drafted/attempts.parquet")
    assert attempts.height == 1 + 2 * (len(HINTS) - 1)       # kept at once; two replies for each other hint
    assert (attempts["verdict"] != "error").all() and (attempts["tokens_out"] > 0).all()
    first = attempts.row(0, named=True)
    assert first["verdict"] == "kept" and json.loads(first["draft_json"]) == SMALL_INVOICE
    assert attempts.filter(pl.col("round") == 0)["reason_kinds"].to_list()[1:] == [["duplicate"]] * (len(HINTS) - 1)
    assert all(attempts.filter(pl.col("verdict") == "rejected")["reasons"].list.len() > 0)
    assert f"drafts: {len(HINTS)}, kept: 1 (acceptance 33.3%" in p.stdout
    assert (tmp_path / "reports/drafted.md").exists()
