"""Pieces of the distillation loop (train.distill): the teacher's signal, its failures, and
each method's loss on a real (tiny) student and teacher."""

from __future__ import annotations

import math

import pytest
import torch

from distillery.lm.model import ModelConfig, build_model
from distillery.train.data import Example, collate
from distillery.train.distill import (
    DistillConfig,
    distill_loss_fn,
    gap_closed,
    gkd_mix,
    scope_weights,
    teacher_divergence,
    teacher_logprobs,
)
from distillery.train.rl import score_examples

IDS, LABELS = [3, 4, 5, 6, 7, 8], [-100, -100, -100, 6, 7, 8]


def _model(seed: int, vocab: int = 20, hidden: int = 16, window: int = 64):
    torch.manual_seed(seed)
    return build_model(ModelConfig(hidden_size=hidden, n_layers=1, n_heads=2, n_kv_heads=1, intermediate_size=32,
                                   vocab_size=vocab, max_position_embeddings=window, init_seed=seed))


def _batch(examples, student, teacher_lp, correct=1.0, group=0.0):
    old = score_examples(student, examples, temperature=1.0, pad_id=0)
    rows = []
    for i, e in enumerate(examples):
        ok = not any(math.isnan(v) for v in teacher_lp[i])
        rows.append(Example(e.input_ids, e.labels, {"teacher_logp": teacher_lp[i], "old_logp": old[i],
                                                    "teacher_ok": 1.0 if ok else 0.0, "correct": correct,
                                                    "group": group, "w_stu": 1.0, "w_tea": 1.0}))
    return collate(rows, pad_id=0)


def test_a_sample_the_teacher_cannot_score_is_nan_with_a_reason():
    teacher = _model(1, window=8)
    long = Example(list(range(3, 13)), [-100] * 5 + list(range(8, 13)))      # 10 tokens > window 8
    lp, reasons = teacher_logprobs(teacher, [Example(IDS, LABELS), long], pad_id=0)
    assert all(math.isfinite(v) for v in lp[0]) and sum(lp[0]) < 0
    assert all(math.isnan(v) for v, lab in zip(lp[1], long.labels, strict=True) if lab != -100)
    assert len(reasons) == 1 and "window" in reasons[0]


def test_a_teacher_call_that_raises_skips_only_its_samples():
    teacher = _model(1, vocab=10)                    # ids >= 10 are outside its vocabulary
    bad = Example([3, 4, 15, 6], [-100, -100, 15, 6])
    lp, reasons = teacher_logprobs(teacher, [Example([3, 4, 5, 6], [-100, -100, 5, 6]), bad], pad_id=0)
    assert all(math.isfinite(v) for v in lp[0])
    assert math.isnan(lp[1][2]) and "failed" in reasons[0]


@pytest.mark.parametrize("method", ["gkd", "opd", "aopd", "scope"])
def test_every_method_gives_a_finite_loss_with_a_failed_teacher_row_in_the_batch(method):
    student, teacher = _model(0), _model(1)
    good = Example(IDS, LABELS)
    t_good = score_examples(teacher, [good], temperature=1.0, pad_id=0)[0]
    t_bad = [math.nan if lab != -100 else 0.0 for lab in LABELS]
    batch = _batch([good, good], student, [t_good, t_bad], correct=0.0)
    loss, parts = distill_loss_fn(DistillConfig(method=method), teacher)(student, batch)
    assert math.isfinite(loss.item())
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None)
    assert parts["skipped_tokens"] == 3


@pytest.mark.parametrize("method", ["gkd", "opd"])
def test_a_teacher_identical_to_the_student_gives_zero_loss(method):
    student = _model(0)
    teacher = _model(0)
    lp = score_examples(teacher, [Example(IDS, LABELS)], temperature=1.0, pad_id=0)
    loss, _ = distill_loss_fn(DistillConfig(method=method), teacher)(student, _batch([Example(IDS, LABELS)], student, lp))
    assert abs(loss.item()) < 1e-6


def test_scope_weights_are_count_scaled_softmaxes_within_each_path():
    ex = [Example(IDS, LABELS, {"correct": c, "group": 0.0}) for c in (1.0, 1.0, 0.0, 0.0)]
    # student mean log-probs of the correct rows -1 and -2; teacher's of the wrong rows -1 and -3
    old = [[0.0, 0.0, 0.0, v, v, v] for v in (-1.0, -2.0, 0.0, 0.0)]
    tea = [[0.0, 0.0, 0.0, v, v, v] for v in (0.0, 0.0, -1.0, -3.0)]
    w_stu, w_tea = scope_weights(ex, old, tea)
    e1, e2 = math.exp(1.0), math.exp(2.0)            # softmax(-l_S): the less confident weighs more
    assert w_stu == pytest.approx([2 * e1 / (e1 + e2), 2 * e2 / (e1 + e2), 0.0, 0.0])
    a, b = math.exp(-1.0), math.exp(-3.0)            # softmax(+l_T): the teacher-plausible wrong weighs more
    assert w_tea == pytest.approx([0.0, 0.0, 2 * a / (a + b), 2 * b / (a + b)])
    # a hotter softmax flattens both paths: tau 2 halves the log-prob gaps
    w_stu, w_tea = scope_weights(ex, old, tea, tau=2.0)
    e1, e2 = math.exp(0.5), math.exp(1.0)
    assert w_stu == pytest.approx([2 * e1 / (e1 + e2), 2 * e2 / (e1 + e2), 0.0, 0.0])
    a, b = math.exp(-0.5), math.exp(-1.5)
    assert w_tea == pytest.approx([0.0, 0.0, 2 * a / (a + b), 2 * b / (a + b)])


class _Unigram(torch.nn.Module):
    """The same next-token logits at every position: KL and NLL can be worked out by hand.
    Its head is not a Linear, so `action_logits` takes the full-forward path."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits, dtype=torch.float32)
        self.config = type("Config", (), {})()

    def get_output_embeddings(self):
        return None

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        return type("Out", (), {"logits": self.logits.expand(*input_ids.shape, -1)})()


def test_teacher_divergence_by_hand():
    # student p = (1/4, 3/4), teacher q = (1/2, 1/2); targets 1, 0, 1 (and one more batch: 1)
    student, teacher = _Unigram([0.0, math.log(3.0)]), _Unigram([0.0, 0.0])
    examples = [Example([0, 1, 0, 1], [-100, 1, 0, 1]), Example([1, 1], [-100, 1])]
    d = teacher_divergence(student, teacher, examples, pad_id=0, batch_size=1)
    assert d.tokens == 4
    assert d.reverse_kl == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5))     # 0.1308
    assert d.forward_kl == pytest.approx(0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0))  # 0.1438
    assert d.student_nll == pytest.approx(-(3 * math.log(0.75) + math.log(0.25)) / 4)
    assert d.teacher_nll == pytest.approx(math.log(2.0))
    # A real model against itself: zero KL, the same NLL either way, whatever the batching.
    m = _model(0)
    real = [Example(IDS, LABELS), Example(IDS[:4], [-100, -100, -100, 6])]
    one, split = (teacher_divergence(m, m, real, pad_id=0, batch_size=b) for b in (8, 1))
    assert one.reverse_kl == pytest.approx(0.0, abs=1e-9) and one.forward_kl == pytest.approx(0.0, abs=1e-9)
    assert one.student_nll == pytest.approx(one.teacher_nll) and one.student_nll > 0
    assert split.student_nll == pytest.approx(one.student_nll, rel=1e-5) and one.tokens == split.tokens == 4


def test_gap_closed():
    assert gap_closed(0.5, 0.6, 0.9) == pytest.approx(0.25)
    assert math.isnan(gap_closed(0.5, 0.6, 0.4))


def test_config_names_what_is_wrong():
    with pytest.raises(ValueError, match="method"):
        DistillConfig(method="kd")
    with pytest.raises(ValueError, match="start"):
        DistillConfig(start="medium")
    with pytest.raises(ValueError, match="scope_tau"):
        DistillConfig(scope_tau=0.0)


def _samples(n: int, on_policy: float = 1.0) -> list[Example]:
    return [Example([3, 4, 5 + i], [-100, -100, 5 + i], {"on_policy": on_policy}) for i in range(n)]


def test_gkd_mix_keeps_a_seeded_lambda_share_of_the_student_and_asks_for_the_rest():
    student, asked = _samples(8), []

    def demos(n):
        asked.append(n)
        return _samples(n, on_policy=0.0)

    mixed, note = gkd_mix(student, demos, lam=0.25, seed=7)
    assert note == "" and asked == [6]                     # 2 kept; 2 * 0.75 / 0.25 = 6 from the dataset
    own = [e for e in mixed if e.extras["on_policy"] == 1.0]
    assert len(own) == 2 and len(mixed) == 8
    assert own == sorted(own, key=student.index)           # a subset, in the samples' order
    assert [e.input_ids for e in gkd_mix(student, demos, 0.25, 7)[0]] == [e.input_ids for e in mixed]
    assert mixed[2:] == _samples(6, on_policy=0.0)         # the dataset's part follows the student's


def test_gkd_mix_with_no_dataset_examples_keeps_every_student_sample_and_says_so():
    student = _samples(5)
    mixed, note = gkd_mix(student, lambda n: [], lam=0.5, seed=0)
    assert mixed == student and mixed is not student
    assert "student samples only" in note


@pytest.mark.parametrize(("start", "made_by"), [("strong", "warmup"), ("weak", "student_weak")])
def test_a_missing_model_names_the_stage_that_writes_it(start, made_by, tmp_path, monkeypatch):
    """The strong start is the warm-up's model: its hint must not send the user to another stage."""
    from dataclasses import replace

    from distillery.io import MissingInput
    from distillery.train.distill import run_distill
    from distillery.types import Task

    monkeypatch.chdir(tmp_path)
    task = Task(task_id="t0", family="f", split="test", profile="p", hint="", instruction="do it", initial_state={},
                reference_solution=[], checks=[])
    tasks = [task, replace(task, task_id="t1", split="heldout_train")]
    with pytest.raises(MissingInput, match=f"model directory 'models/{made_by}' does not exist; run its stage "
                                           f"\\(`dvc repro {made_by}`\\)"):
        run_distill(DistillConfig(start=start), tasks, None, tmp_path / "run")
    custom = DistillConfig(student_dirs={"strong": str(tmp_path / "mine"), "weak": str(tmp_path / "mine")},
                           teacher_dir=str(tmp_path / "mine"))
    with pytest.raises(MissingInput, match="mine' does not exist$"):     # not under models/: no stage to name
        run_distill(custom, tasks, None, tmp_path / "run")
