"""The training loop: it learns, touches every trainable weight, resumes, logs; LoRA trains
only adapters; the head-on-targets shortcut gives the same logits as a full forward."""

from __future__ import annotations

import copy
import json
import logging
import platform
import random
from pathlib import Path

import pytest
import torch

from distillery.agents.prompts import PromptConfig, episode_example_ids
from distillery.lm.model import ModelConfig, build_model
from distillery.lm.target_forward import decoder_at_targets
from distillery.lm.tokenizer import TokenizerConfig, train_tokenizer
from distillery.train.config import TrainConfig
from distillery.train.data import (
    Example,
    ExampleGroups,
    GroupBatch,
    collate,
    example_from_mask,
    examples_from_masks,
)
from distillery.train.loop import (
    action_logits,
    checkpoint_dirs,
    cpu_runs_natively,
    lr_lambda,
    sft_loss_fn,
    train,
)
from distillery.types import Turn

TINY = dict(hidden_size=32, n_layers=2, n_heads=4, n_kv_heads=2, intermediate_size=64,
            max_position_embeddings=256)
FILES = ["invoice_acme.pdf", "notes.txt", "budget_q3.xlsx", "minutes_2024.docx", "photo_team.png",
         "contract_globex.pdf", "receipt_final.pdf", "slides_q3.pdf"]
FOLDERS = ["finance", "archive", "legal", "travel"]


def episodes(n: int, seed: int) -> list[tuple[str, list[Turn]]]:
    """Move one listed file to a folder: the action copies names from the observation."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        f, d = rng.choice(FILES), rng.choice(FOLDERS)
        listing = "downloads/\n  " + "\n  ".join(rng.sample(FILES, 3) + [f])
        out.append((f"Move {f} to {d}.", [Turn(listing, f'move_file(src="downloads/{f}", dst="{d}/")'),
                                         Turn("ok: moved", "finish()")]))
    return out


@pytest.fixture(scope="module")
def tok():
    texts = [t for instr, turns in episodes(40, 9) for t in (instr, *[x.observation for x in turns],
                                                               *[x.action for x in turns])]
    return train_tokenizer(texts, TokenizerConfig(vocab_size=1024))


def make_examples(tok, n: int, seed: int) -> list[Example]:
    cfg = PromptConfig(max_prompt_tokens=256)
    return examples_from_masks(episode_example_ids(i, t, tok, cfg) for i, t in episodes(n, seed))


def quiet(**kw) -> TrainConfig:
    # One thread: these models are too small to gain from two, and a second thread that
    # waits on a core another process holds makes every op crawl.
    return TrainConfig(progress=False, num_threads=1, **kw)


def test_sft_learns_and_moves_every_trainable_parameter(tok, tmp_path):
    model = build_model(ModelConfig(**TINY), tok)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_ex, eval_ex = make_examples(tok, 48, 0), make_examples(tok, 12, 1)
    cfg = quiet(lr=3e-3, warmup_steps=5, max_steps=40, batch_size=8, log_every=5, eval_every=20,
                save_every=20, keep_checkpoints=1)
    result = train(model, train_ex, eval_ex, cfg, tmp_path)

    assert result.steps == 40 and result.resumed_from is None
    losses = [r["train/loss"] for r in result.history if "train/loss" in r]
    assert losses[-1] < 0.6 * losses[0], losses
    evals = [r["eval/loss"] for r in result.history if "eval/loss" in r]
    assert len(evals) == 2 and evals[-1] < evals[0]
    assert result.metrics["eval_loss"] == evals[-1] and result.tokens_per_s > 0
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged, f"parameters that never moved: {unchanged}"
    assert not model.training

    # DVCLive: a summary and per-metric histories, and no dvc.yaml anywhere near.
    summary = json.loads((tmp_path / "dvclive" / "metrics.json").read_text())
    assert summary["train"]["loss"] == losses[-1] and "eval" in summary
    assert (tmp_path / "dvclive" / "plots" / "metrics" / "train" / "tokens_per_s.tsv").is_file()
    assert not list(tmp_path.rglob("dvc.yaml"))
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-40"]


def test_a_finished_run_resumes_to_nothing_and_a_changed_config_starts_afresh(tok, tmp_path):
    ex = make_examples(tok, 16, 0)
    cfg = quiet(lr=3e-3, max_steps=6, batch_size=8, save_every=3, dvclive=False)
    model = build_model(ModelConfig(**TINY), tok)
    train(model, ex, [], cfg, tmp_path)
    done = copy.deepcopy(model.state_dict())

    again = build_model(ModelConfig(**TINY, init_seed=5), tok)      # different start: overwritten
    result = train(again, ex, [], cfg, tmp_path)
    assert result.resumed_from == 6 and result.steps == 6
    assert result.tokens_per_s > 0 and result.metrics["tokens"] == sum(len(e) for e in ex) * 6 // 2
    assert all(torch.equal(again.state_dict()[k], v) for k, v in done.items())

    changed = build_model(ModelConfig(**TINY), tok)
    result = train(changed, ex, [], quiet(lr=1e-3, max_steps=6, batch_size=8, save_every=3, dvclive=False), tmp_path)
    assert result.resumed_from is None and result.steps == 6


def test_checkpoints_written_by_other_code_are_not_resumed(tok, tmp_path, monkeypatch):
    import distillery.train.loop as loop

    ex = make_examples(tok, 16, 0)
    cfg = quiet(lr=3e-3, max_steps=6, batch_size=8, save_every=3, dvclive=False)
    train(build_model(ModelConfig(**TINY), tok), ex, [], cfg, tmp_path)
    monkeypatch.setattr(loop, "source_fingerprint", lambda: "the code after an edit")
    result = train(build_model(ModelConfig(**TINY), tok), ex, [], cfg, tmp_path)
    assert result.resumed_from is None and result.steps == 6
    monkeypatch.undo()        # back to the real code: the edited run's checkpoints are not its own
    assert train(build_model(ModelConfig(**TINY), tok), ex, [], cfg, tmp_path).resumed_from is None


def test_lora_trains_only_the_adapters(tok, tmp_path):
    model = build_model(ModelConfig(**TINY, lora_r=4, lora_alpha=8), tok)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = train(model, make_examples(tok, 16, 0), [], quiet(lr=1e-2, max_steps=8, batch_size=8,
                                                               dvclive=False, save_every=4), tmp_path)
    assert result.steps == 8
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) != (n in trainable), n
    assert sorted(checkpoint_dirs(tmp_path))[-1].name == "step-8"


def test_head_on_targets_equals_the_full_forward(tok):
    model = build_model(ModelConfig(**TINY, init_std=0.2), tok).eval()
    batch = collate(make_examples(tok, 3, 4), pad_id=tok.pad_token_id)
    assert batch.attention_mask is not None or len({len(e) for e in make_examples(tok, 3, 4)}) == 1
    with torch.no_grad():
        al = action_logits(model, batch)
        full = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    assert al.logits.shape == (batch.n_labels, len(tok))
    torch.testing.assert_close(al.logits, full[al.rows, al.cols], atol=1e-5, rtol=1e-5)
    assert torch.equal(al.targets, batch.labels[:, 1:][al.rows, al.cols])
    dense = al.to_dense(torch.ones(len(al.targets)))
    assert dense.shape == (batch.input_ids.shape[0], batch.input_ids.shape[1] - 1)
    assert int(dense.sum()) == batch.n_labels


def test_a_custom_objective_gets_the_batch_extras(tok, tmp_path):
    seen = []

    def weighted(model, batch):
        seen.append(batch.extras["w"].tolist())
        loss, stats = sft_loss_fn(model, batch)
        return loss * batch.extras["w"].mean(), {**stats, "w": float(batch.extras["w"].mean())}

    ex = [example_from_mask(e.input_ids, [t != -100 for t in e.labels], {"w": 0.5})
          for e in make_examples(tok, 8, 0)]
    result = train(build_model(ModelConfig(**TINY), tok), ex, [], quiet(max_steps=2, batch_size=4, dvclive=False),
                   tmp_path, loss_fn=weighted)
    assert seen == [[0.5] * 4] * 2
    assert result.history[-1]["train/w"] == 0.5


def test_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(lr=1.0, warmup_steps=4, min_lr_ratio=0.1, max_steps=20)
    f = lr_lambda(cfg, 20)
    assert [round(f(s), 3) for s in range(4)] == [0.2, 0.4, 0.6, 0.8]
    assert f(4) == pytest.approx(1.0)
    assert f(20) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(4, 20))


def test_config_errors_say_what_to_change():
    with pytest.raises(ValueError, match="train.lr must be > 0"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="set train.max_steps > 0 or train.epochs > 0"):
        TrainConfig(max_steps=0, epochs=0)
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        TrainConfig(mixed_precision="fp8")
    assert TrainConfig(eval_every=5).fingerprint() == TrainConfig(eval_every=50).fingerprint()
    assert TrainConfig(lr=1e-3).fingerprint() != TrainConfig(lr=2e-3).fingerprint()


def test_warmup_flow_end_to_end_trained_model_acts_through_hf_policy(tok, tmp_path):
    """tokenizer -> examples -> build_model -> train -> card -> save_model_dir -> HFPolicy."""
    from distillery.agents.hf import HFPolicy
    from distillery.lm.model import save_model_dir
    from distillery.train.card import build_card
    from distillery.types import Context, Task

    prompt = PromptConfig(max_prompt_tokens=256)
    mcfg = ModelConfig(**{**TINY, "hidden_size": 64, "intermediate_size": 128})
    tcfg = quiet(lr=5e-3, warmup_steps=5, max_steps=60, batch_size=16, dvclive=False)
    model = build_model(mcfg, tok)
    result = train(model, make_examples(tok, 64, 0), make_examples(tok, 8, 1), tcfg, tmp_path / "run")
    card = build_card(prompt=prompt, seed=tcfg.seed, metrics=result.metrics, model_cfg=mcfg, train_cfg=tcfg,
                      model=model)
    save_model_dir(tmp_path / "model", model, tok, card)

    policy = HFPolicy(str(tmp_path / "model"), device="cpu")
    assert policy.prompt == prompt
    instruction, turns = episodes(1, 5)[0]
    task = Task(task_id="t", family="f", split="test", profile="default", hint="", instruction=instruction,
                initial_state={}, reference_solution=[], checks=[])
    out = policy.act([Context("e", task, 0, turns[0].observation)])[0]
    assert out.token_ids and len(out.token_logprobs) == len(out.token_ids)
    # 60 steps teach the constant part of the first action (names need longer).
    assert out.text.startswith('move_file(src="downloads/'), out.text


def test_groups_train_in_the_callers_order_and_the_objective_sees_each_groups_rows(tok, tmp_path):
    """A run on ExampleGroups: batch_size counts groups, the caller's order is followed epoch
    by epoch, every needed example is collated once (in index order) and the objective
    knows which rows are whose."""
    examples = make_examples(tok, 6, 0)
    groups = ExampleGroups(members=[[0, 2], [2, 5], [1], [3, 4]],
                           order=lambda epoch: [[3, 0], [1, 2]] if epoch == 0 else [[2, 1], [0, 3]])
    seen = []

    def objective(model, gb):
        assert isinstance(gb, GroupBatch)
        need = sorted({i for g in gb.groups for i in groups.members[g]})
        assert gb.rows == {i: r for r, i in enumerate(need)}
        assert gb.batch.input_ids.shape[0] == len(need)
        for i, r in gb.rows.items():
            n = len(examples[i])
            assert gb.batch.input_ids[r, :n].tolist() == examples[i].input_ids
        seen.append(gb.groups)
        return sft_loss_fn(model, gb.batch)

    model = build_model(ModelConfig(**TINY), tok)
    result = train(model, examples, [], quiet(max_steps=0, epochs=2.0, batch_size=2, dvclive=False), tmp_path,
                   objective, groups=groups)
    assert seen == [[3, 0], [1, 2], [2, 1], [0, 3]] and result.steps == 4

    with pytest.raises(ValueError, match="order has 3 micro-batches, not 2"):
        bad = ExampleGroups(members=groups.members, order=lambda epoch: [[0], [1], [2, 3]])
        train(model, examples, [], quiet(max_steps=1, batch_size=2, dvclive=False), tmp_path, objective, groups=bad)
    with pytest.raises(ValueError, match="takes no eval_examples"):
        train(model, examples, examples[:1], quiet(max_steps=1, dvclive=False), tmp_path, objective, groups=groups)


def test_gradients_left_on_the_model_do_not_leak_into_the_first_step(tok, tmp_path):
    examples = make_examples(tok, 8, 0)
    cfg = quiet(max_steps=2, batch_size=4, dvclive=False)
    clean, stale = build_model(ModelConfig(**TINY), tok), build_model(ModelConfig(**TINY), tok)
    stale(torch.tensor([examples[0].input_ids])).logits.sum().backward()
    train(clean, examples, [], cfg, tmp_path / "a")
    train(stale, examples, [], cfg, tmp_path / "b")
    assert all(torch.equal(a, b) for a, b in zip(clean.parameters(), stale.parameters(), strict=True))


def test_fused_and_unfused_adamw_are_the_same_update_up_to_rounding(tok, tmp_path):
    examples = make_examples(tok, 8, 0)
    cfg = quiet(max_steps=3, batch_size=4, dvclive=False)
    fused, plain = build_model(ModelConfig(**TINY), tok), build_model(ModelConfig(**TINY), tok)
    train(fused, examples, [], cfg, tmp_path / "a")
    train(plain, examples, [], cfg, tmp_path / "b", fused_adamw=False)
    for a, b in zip(fused.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_the_last_layer_at_targets_trains_as_the_whole_forward_up_to_rounding(tok, tmp_path, monkeypatch):
    import distillery.train.loop as loop

    calls = []
    monkeypatch.setattr(loop, "decoder_at_targets", lambda *a: calls.append(1) or decoder_at_targets(*a))
    examples = make_examples(tok, 16, 0)
    cfg = quiet(lr=3e-3, max_steps=4, batch_size=4, dvclive=False, save_every=2)
    whole, targeted = build_model(ModelConfig(**TINY), tok), build_model(ModelConfig(**TINY), tok)
    a = train(whole, examples, [], cfg, tmp_path / "a")
    assert not calls
    b = train(targeted, examples, [], cfg, tmp_path / "b", last_layer_at_targets=True)
    assert len(calls) == 4          # one micro-batch a step
    assert a.metrics["tokens"] == b.metrics["tokens"]
    torch.testing.assert_close(b.metrics["train_loss"], a.metrics["train_loss"], rtol=1e-5, atol=0)
    for (name, p), q in zip(whole.named_parameters(), targeted.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=name)
    # The setting holds for the run only; outside it `action_logits` runs the whole decoder.
    assert loop._LAST_LAYER_AT_TARGETS.get() is False
    # A checkpoint of one forward is not resumed by a run of the other: their updates round apart.
    again = train(build_model(ModelConfig(**TINY), tok), examples, [], cfg, tmp_path / "b")
    assert again.resumed_from is None
    assert train(build_model(ModelConfig(**TINY), tok), examples, [], cfg, tmp_path / "b",
                 last_layer_at_targets=True).resumed_from is None
    assert train(build_model(ModelConfig(**TINY), tok), examples, [], cfg, tmp_path / "b",
                 last_layer_at_targets=True).resumed_from == 4


def test_bf16_autocast_trains_like_fp32_and_keeps_fp32_weights(tok, tmp_path, caplog):
    # The GPU's default precision, run on the CPU through the same autocast path: the
    # weights and the optimizer stay fp32, the matmuls run in bf16.
    train_ex = make_examples(tok, 48, 0)
    losses = {}
    for precision in ("no", "bf16"):
        model = build_model(ModelConfig(**TINY), tok)
        cfg = quiet(lr=3e-3, warmup_steps=5, max_steps=30, batch_size=8, log_every=1, dvclive=False,
                    mixed_precision=precision)
        with caplog.at_level(logging.WARNING, logger="distillery.train"):
            result = train(model, train_ex, [], cfg, tmp_path / precision)
        # Where bf16 matmuls are emulated (an AVX2-only CPU), the run says fp32 is faster.
        slow_warned = any("no native bf16 matmuls" in r.getMessage() for r in caplog.records)
        assert slow_warned == (precision == "bf16" and not cpu_runs_natively("bf16")), caplog.text
        caplog.clear()
        losses[precision] = [r["train/loss"] for r in result.history if "train/loss" in r]
        assert all(p.dtype == torch.float32 for p in model.parameters())
    fp32, bf16 = losses["no"], losses["bf16"]
    assert bf16[-1] < 0.7 * bf16[0], bf16
    # Same start, same data: the two runs' losses agree to bf16's precision all the way
    # (measured: within 1e-3 over 30 steps), and neither is the other (bf16 really ran).
    assert all(abs(b - f) < 0.02 * f for b, f in zip(bf16, fp32, strict=True)), (fp32, bf16)
    assert bf16 != fp32


def test_native_half_precision_check_matches_the_cpu_flags():
    # oneDNN runs bf16 matmuls natively on AVX-512 (f, bw, vl, dq) CPUs and falls back to
    # slow kernels on plain AVX2 ones; the check must say which this machine is.
    cpuinfo = Path("/proc/cpuinfo")
    if platform.machine() not in ("x86_64", "AMD64") or not cpuinfo.is_file():
        pytest.skip("the flags are read from /proc/cpuinfo on x86-64")
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("flags")), []))
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        assert cpu_runs_natively("bf16")
    elif not flags & {"avx512f", "avx_ne_convert", "avx_vnni"}:
        assert not cpu_runs_natively("bf16")
    else:
        pytest.skip(f"a partial AVX-512 or AVX-VNNI CPU: {sorted(f for f in flags if 'avx' in f)}")
    assert cpu_runs_natively("no")
