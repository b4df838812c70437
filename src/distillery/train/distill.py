"""On-policy distillation of a student from a larger teacher: GKD, OPD, AOPD and SCOPE.

Each iteration k (reference/algorithms.md section 4):

1. **Student rollouts.** The student samples K episodes of each of a slice of learning
   tasks (one group per task); every environment step is one sample (the prompt it acted
   on, then its action; tool outputs are context, never targets). The learning tasks are
   ones neither model was trained on (default: the held-out user's learning tasks). On
   the training users' tasks, which both models have memorised (the strong student
   samples 0.83 of them right at temperature 1), the teacher had next to nothing to
   teach: OPD left the test success where it started (README, on-policy distillation).
2. **Teacher signal.** The teacher scores the same tokens (it must share the student's
   tokenizer). A sample the teacher cannot score (its context window is shorter, or the
   call raised) gets NaN teacher log-probs and is skipped by every loss, counted and
   logged (`train.losses.teacher_coverage`), never turned into a NaN loss.
3. **Update** with `method`:
   - `gkd`: generalized JSD (beta) over the full vocabulary, on student samples with
     probability lambda and on the dataset's (oracle) steps otherwise (TRL's GKDTrainer;
     the dataset is the oracle's steps on `gkd_dataset_split`, the training data);
   - `opd`: per-token reverse KL as an advantage, importance-sampling surrogate (tinker);
   - `aopd`: tokens where the teacher is more likely are reinforced (PPO-clip), the rest
     pulled to the teacher's top-K distribution ([inferred] reading of 4c);
   - `scope`: routed by the episode's success: wrong samples get teacher-guided PPO weighted
     by the teacher's perplexity softmax within the task group, correct samples weighted
     MLE by the student's (the paper's sign, 4d).
4. **Evaluation.** Greedy success of the student on the test tasks, every iteration; the
   teacher's once. The gap closed is (final - start) / (teacher - start).

Iterations are checkpointed like the rl stage (`<run>/iter-<k>/`) and resume the same way.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import polars as pl
import torch

from distillery.agents.prompts import PromptConfig
from distillery.config import _f
from distillery.io import MissingInput, stage_writing, write_text
from distillery.rollout import Trajectories
from distillery.train.config import OnPolicyConfig, TrainConfig
from distillery.train.data import Batch, Example, collate
from distillery.train.examples import sft_examples
from distillery.train.internalize import model_prompt, run_policy, success_rate
from distillery.train.loop import action_logits, train
from distillery.train.losses import (
    IGNORE_INDEX,
    ScopeWeights,
    aopd_loss,
    generalized_jsd_loss,
    opd_loss,
    scope_loss,
    scope_path_weights,
    sequence_mean_logprob,
    teacher_coverage,
)
from distillery.train.rl import learning_slice, score_examples, step_examples
from distillery.types import Task


@dataclass
class DistillConfig(OnPolicyConfig):
    """`distill` stage: a student learns from a teacher on its own samples."""

    section: ClassVar[str] = "distill"

    method: Literal["gkd", "opd", "aopd", "scope"] = _f("opd", "gkd | opd | aopd | scope")
    start: Literal["strong", "weak"] = _f("strong", "strong (the warm-up student) | weak (a briefly trained one)")
    student_dirs: dict[str, str] = _f({"strong": "models/warmup", "weak": "models/student_weak"},
                                      "the student model directory of each start")
    teacher_dir: str = _f("models/teacher", "the teacher: any model directory with the student's tokenizer")
    learn_split: str = _f("heldout_train", "tasks the student samples on: tasks neither model was trained on "
                          "(both have memorised the training users' tasks, where the teacher has little to teach)")
    test_split: str = _f("test", "tasks both are evaluated on, greedy")
    iterations: int = _f(4, "sample -> teacher -> update cycles")
    k: int = _f(4, "student samples per task (SCOPE's prompt group)")
    temperature: float = _f(1.0, "student sampling temperature (the distribution that is distilled)")
    epochs: int = _f(1, "update passes over each iteration's samples")
    gkd_beta: float = _f(0.5, "GKD: JSD beta (0 forward KL, 1 reverse KL); TRL's default")
    gkd_lambda: float = _f(0.5, "GKD: share of student-sampled steps (the rest from the dataset); TRL's default")
    gkd_dataset_split: str = _f("train", "GKD: the dataset part is the oracle's steps on this split's tasks")
    opd_kl_coef: float = _f(1.0, "OPD: c in A_t = -c (log pi_S - log pi_T)")
    aopd_eta: float = _f(1.0, "AOPD: weight of the pull to the teacher on non-positive tokens")
    aopd_top_k: int = _f(20, "AOPD: the teacher's top-K support of the local divergence")
    scope_tau: float = _f(1.0, "SCOPE: perplexity-softmax temperature")
    clip: float = _f(0.2, "PPO clip of AOPD and SCOPE")
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        lr=1e-4, min_lr_ratio=1.0, warmup_steps=0, epochs=1.0, batch_size=32, weight_decay=0.0,
        save_every=20, keep_checkpoints=1), metadata={"help": "the optimiser of each update"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.start not in self.student_dirs:
            raise ValueError(f"distill.start {self.start!r} is not a key of distill.student_dirs "
                             f"({sorted(self.student_dirs)})")
        if self.iterations < 1 or self.tasks_per_family < 1 or self.epochs < 1:
            raise ValueError("distill.iterations, tasks_per_family and epochs must be >= 1")
        if not 0 <= self.gkd_lambda <= 1 or not 0 <= self.gkd_beta <= 1:
            raise ValueError("distill.gkd_lambda and distill.gkd_beta must lie in [0, 1]")
        if self.scope_tau <= 0:
            raise ValueError(f"distill.scope_tau must be > 0 (the perplexity-softmax temperature), got {self.scope_tau}")

    @property
    def student_dir(self) -> str:
        return self.student_dirs[self.start]


# ---------------------------------------------------------------------------------------
# The teacher's signal
# ---------------------------------------------------------------------------------------


def same_tokenizer(a: Any, b: Any) -> bool:
    """Token-level distillation needs one vocabulary: the same token -> id map."""
    return a.get_vocab() == b.get_vocab()


def teacher_logprobs(teacher: Any, examples: Sequence[Example], *, pad_id: int,
                     batch_size: int = 64) -> tuple[list[list[float]], list[str]]:
    """Per-token teacher log-probs of each example's targets, aligned with input_ids (0 off
    target). An example the teacher cannot score gets NaN on its targets, with the reason:
    longer than the teacher's context window, or the call raised (the batch is then tried
    one example at a time, so one bad row does not sink its neighbours)."""
    limit = getattr(teacher.config, "max_position_embeddings", None)
    out: list[list[float]] = [[0.0] * len(e) for e in examples]
    reasons: list[str] = []
    ok = []
    for i, e in enumerate(examples):
        if limit is not None and len(e) > limit:
            out[i] = [math.nan if lab != IGNORE_INDEX else 0.0 for lab in e.labels]
            reasons.append(f"sample {i}: {len(e)} tokens exceed the teacher's {limit}-token window")
        else:
            ok.append(i)

    def score(idx: list[int]) -> None:
        scored = score_examples(teacher, [examples[i] for i in idx], temperature=1.0, pad_id=pad_id,
                                batch_size=batch_size)
        for i, v in zip(idx, scored, strict=True):
            out[i] = v

    for s in range(0, len(ok), batch_size):
        idx = ok[s: s + batch_size]
        try:
            score(idx)
        except Exception as err:  # noqa: BLE001 - a failed teacher call is a skipped sample, logged
            for i in idx:
                try:
                    score([i])
                except Exception as one:  # noqa: BLE001
                    out[i] = [math.nan if lab != IGNORE_INDEX else 0.0 for lab in examples[i].labels]
                    reasons.append(f"sample {i}: teacher call failed ({type(one).__name__}: {one}; batch: {err})")
    return out, reasons


def scope_weights(examples: Sequence[Example], old: Sequence[Sequence[float]],
                  teacher: Sequence[Sequence[float]], *, tau: float = 1.0) -> tuple[list[float], list[float]]:
    """SCOPE's w_stu, w_tea per sample, from the pre-update student and the teacher, within
    each `group` extra (the task's samples), routed by the `correct` extra; `tau` is the
    perplexity-softmax temperature."""
    n = len(examples)
    if n == 0:
        return [], []
    width = max(len(e) for e in examples)
    mask = torch.zeros(n, width, dtype=torch.bool)
    s_lp = torch.zeros(n, width, dtype=torch.float64)
    t_lp = torch.zeros(n, width, dtype=torch.float64)
    for i, e in enumerate(examples):
        mask[i, : len(e)] = torch.tensor([lab != IGNORE_INDEX for lab in e.labels])
        s_lp[i, : len(e)] = torch.tensor(old[i], dtype=torch.float64)
        t_lp[i, : len(e)] = torch.tensor(teacher[i], dtype=torch.float64)
    l_t = torch.where(mask, t_lp, torch.zeros_like(t_lp)).sum(-1) / mask.sum(-1).clamp(min=1)
    w = scope_path_weights(sequence_mean_logprob(s_lp, mask), l_t,
                           torch.tensor([e.extras["correct"] > 0 for e in examples]),
                           torch.tensor([int(e.extras["group"]) for e in examples]), tau=tau)
    return w.student.tolist(), w.teacher.tolist()


# ---------------------------------------------------------------------------------------
# Samples and the loss
# ---------------------------------------------------------------------------------------


def student_samples(tasks: Mapping[str, Task], traj: Trajectories, tok: Any,
                    prompt: PromptConfig) -> list[Example]:
    """One sample per student step with `correct` (its episode succeeded) and `group` (a
    dense id of its task group) extras."""
    success = dict(traj.episodes.select("episode_id", "success").iter_rows())
    groups = {g: i for i, g in enumerate(sorted(set(traj.episodes["group"].to_list())))}
    group_of = {e: groups[g] for e, g in traj.episodes.select("episode_id", "group").iter_rows()}
    zero_adv = pl.DataFrame({"episode_id": [], "t": [], "advantage": []},
                            schema={"episode_id": pl.String, "t": pl.Int64, "advantage": pl.Float64})
    examples, keys = step_examples(tasks, traj, zero_adv, tok, prompt, {})
    return [Example(e.input_ids, e.labels, {"correct": 1.0 if success[ep] else 0.0, "group": float(group_of[ep]),
                                            "on_policy": 1.0})
            for e, (ep, _) in zip(examples, keys, strict=True)]


def dataset_samples(tasks: Mapping[str, Task], episodes: pl.DataFrame, steps: pl.DataFrame, tok: Any,
                    prompt: PromptConfig, n: int, seed: int) -> list[Example]:
    """GKD's off-policy part: `n` dataset (oracle) episodes' steps, by a seeded hash."""
    if n <= 0 or episodes.height == 0:
        return []
    eps = episodes.filter(pl.col("success") & pl.col("task_id").is_in(list(tasks)))
    eps = eps.with_columns(pl.col("episode_id").hash(seed).alias("_h")).sort("_h").head(n).drop("_h")
    ex, _ = sft_examples(tasks, eps, steps.join(eps.select("episode_id"), on="episode_id", how="semi"),
                         tok, prompt, only_success=True)
    return [Example(e.input_ids, e.labels, {"correct": 1.0, "group": -1.0, "on_policy": 0.0}) for e in ex]


def gkd_mix(student: Sequence[Example], demos: Callable[[int], list[Example]], lam: float,
            seed: int) -> tuple[list[Example], str]:
    """GKD's data mix (TRL's `lmbda`): a seeded `lam` share of the student's samples, in
    their order, plus `round(kept * (1 - lam) / lam)` dataset examples asked of `demos(n)`.
    When `demos` has nothing to give (no dataset steps on that split), every student sample
    is kept rather than training on half of them; the second value then says so (else "")."""
    perm = torch.randperm(len(student), generator=torch.Generator().manual_seed(seed))
    kept = [student[i] for i in sorted(perm[: round(len(student) * lam)].tolist())]
    got = demos(round(len(kept) * (1 - lam) / max(lam, 1e-9)))
    if got:
        return kept + list(got), ""
    return list(student), "student samples only: no dataset examples to mix in"


def distill_loss_fn(cfg: DistillConfig, teacher: Any) -> Callable[[Any, Batch], tuple[torch.Tensor, dict[str, float]]]:
    """The method's loss on a batch; `teacher` is called (no grad) for full logits where the
    method needs more than the sampled tokens' log-probs (GKD, AOPD)."""

    def teacher_logits(batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            return action_logits(teacher, batch).logits.float()

    def loss_fn(model: Any, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        al = action_logits(model, batch)
        logits = al.logits.float()
        logp = torch.log_softmax(logits, -1).gather(-1, al.targets[:, None])[:, 0]
        t_dense = batch.extras["teacher_logp"][:, 1:]
        t_lp = t_dense[al.rows, al.cols]
        old = batch.extras["old_logp"][:, 1:][al.rows, al.cols]
        # Per sample: a row whose teacher signal is missing on any target is skipped whole
        # (its tokens leave the mask, so the losses never read its NaNs).
        cov = teacher_coverage(t_dense, batch.labels[:, 1:] != IGNORE_INDEX)
        mask = cov.has_teacher[al.rows]
        parts: dict[str, float] = {"skipped_rows": float(cov.skipped_rows), "skipped_tokens": float((~mask).sum())}
        if cfg.method == "opd":
            out = opd_loss(logp[None], old[None], t_lp[None], mask[None], kl_coef=cfg.opd_kl_coef)
            parts["reverse_kl"] = float(torch.where(mask, old - torch.nan_to_num(t_lp), 0.0).sum()
                                        / mask.sum().clamp(min=1))
            return out.loss, parts
        if cfg.method == "scope":
            # scope_loss takes the [B, T-1] frame: one row per sample, so its routing and
            # weights stay per sample; a row without a teacher signal is NaN there (skipped)
            has = batch.extras["teacher_ok"] > 0
            t_dense = batch.extras["teacher_logp"][:, 1:]
            t_dense = torch.where(has[:, None], t_dense, torch.full_like(t_dense, math.nan))
            w = ScopeWeights(student=batch.extras["w_stu"], teacher=batch.extras["w_tea"])
            out = scope_loss(al.to_dense(logp), batch.extras["old_logp"][:, 1:], t_dense,
                             batch.labels[:, 1:] != IGNORE_INDEX, batch.extras["correct"] > 0, w,
                             clip_low=cfg.clip, clip_high=cfg.clip)
            return out.loss, {**parts, **out.parts}
        t_logits = teacher_logits(batch)
        if cfg.method == "gkd":
            loss = generalized_jsd_loss(logits[mask][None], t_logits[mask][None], al.targets[mask][None],
                                        beta=cfg.gkd_beta)
            return loss, parts
        top = torch.log_softmax(t_logits, -1).topk(min(cfg.aopd_top_k, t_logits.size(-1)), dim=-1)
        out = aopd_loss(logp[None], old[None], t_lp[None], logits[None], top.indices[None], top.values[None],
                        mask[None], eta=cfg.aopd_eta, clip_low=cfg.clip, clip_high=cfg.clip)
        return out.loss, {**parts, **out.parts}

    return loss_fn


# ---------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------


@dataclass
class DistillIteration:
    iteration: int
    test_success: float
    rollout_success: float
    n_samples: int
    skipped_samples: int
    messages: list[str] = field(default_factory=list)


def run_distill(cfg: DistillConfig, tasks: Sequence[Task], dataset: tuple[pl.DataFrame, pl.DataFrame] | None,
                run_dir: str | Path, log: Callable[[dict[str, float], int], None] | None = None,
                ) -> tuple[Any, Any, dict[str, float], list[DistillIteration]]:
    """The whole loop; returns (student, tokenizer, reference points, results). The
    reference points are the greedy test success of the student before and the teacher."""
    from distillery.lm.model import load_model_dir, save_model_dir

    run_dir = Path(run_dir)
    learn = [t for t in tasks if t.split == cfg.learn_split]
    test = [t for t in tasks if t.split == cfg.test_split]
    if not learn or not test:
        raise ValueError(f"distill: no {cfg.learn_split!r} or {cfg.test_split!r} tasks")
    for what, d in (("student", cfg.student_dir), ("teacher", cfg.teacher_dir)):
        if not (Path(d) / "card.json").is_file() and not (Path(d) / "config.json").is_file():
            stage = stage_writing(d)
            made_by = f"; run its stage (`dvc repro {stage}`)" if stage else ""
            raise MissingInput(f"distill: the {what} model directory {d!r} does not exist{made_by}")
    by_id = {t.task_id: t for t in tasks}
    data_tasks = {t.task_id: t for t in tasks if t.split == cfg.gkd_dataset_split}
    student = load_model_dir(cfg.student_dir)
    teacher = load_model_dir(cfg.teacher_dir)
    if not same_tokenizer(student.tokenizer, teacher.tokenizer):
        raise ValueError(f"distill: {cfg.teacher_dir} and {cfg.student_dir} have different tokenizers; "
                         "token-level distillation needs one vocabulary (train both from the same corpus)")
    teacher.model.eval()
    tok = student.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    s_prompt, t_prompt = model_prompt(cfg.student_dir), model_prompt(cfg.teacher_dir)
    refs_file = run_dir / "reference.json"
    if refs_file.is_file():
        refs = json.loads(refs_file.read_text())
    else:
        refs = {"student_before": _greedy(student.model, tok, test, cfg, s_prompt),
                "teacher": _greedy(teacher.model, teacher.tokenizer, test, cfg, t_prompt)}
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(json.dumps(refs), refs_file)
    if log is not None:
        log({"test_success": refs["student_before"], "teacher_test_success": refs["teacher"]}, -1)
    model = student.model
    results: list[DistillIteration] = []
    for it in range(cfg.iterations):
        done = run_dir / f"iter-{it}"
        if (done / "result.json").is_file():
            results.append(DistillIteration(**json.loads((done / "result.json").read_text())))
            model = load_model_dir(done / "model").model
            continue
        messages: list[str] = []
        slice_ = learning_slice(learn, cfg.tasks_per_family, it)
        traj = run_policy(model, tok, slice_, injector=None, k=cfg.k, temperature=cfg.temperature,
                          seed=cfg.seed * 1000 + it, iteration=it, batch_size=cfg.batch_size, label=f"student-i{it}",
                          prompt=s_prompt, max_new_tokens=cfg.max_new_tokens)
        examples = student_samples(by_id, traj, tok, s_prompt)
        if cfg.method == "gkd" and dataset is not None and cfg.gkd_lambda < 1:
            mix_seed = cfg.seed * 1000 + it
            examples, note = gkd_mix(
                examples, lambda n, s=mix_seed: dataset_samples(data_tasks, dataset[0], dataset[1], tok, s_prompt, n, s),
                cfg.gkd_lambda, mix_seed)
            if note:
                messages.append(f"GKD: {note} (no oracle steps on {cfg.gkd_dataset_split!r} tasks)")
        t_lp, reasons = teacher_logprobs(teacher.model, examples, pad_id=pad)
        messages += reasons[:5] + ([f"... and {len(reasons) - 5} more"] if len(reasons) > 5 else [])
        old = score_examples(model, examples, temperature=1.0, pad_id=pad)
        ok = [not any(math.isnan(v) for v in row) for row in t_lp]
        w_stu, w_tea = scope_weights(examples, old, [[0.0 if math.isnan(v) else v for v in r] for r in t_lp],
                                     tau=cfg.scope_tau) \
            if cfg.method == "scope" else ([1.0] * len(examples), [1.0] * len(examples))
        if cfg.method == "scope":
            # a wrong sample without a teacher signal is left out of its group's weights
            w_tea = [w if k else 0.0 for w, k in zip(w_tea, ok, strict=True)]
        batch = [Example(e.input_ids, e.labels, {**e.extras, "teacher_logp": t_lp[i], "old_logp": old[i],
                                                 "teacher_ok": 1.0 if ok[i] else 0.0,
                                                 "w_stu": w_stu[i], "w_tea": w_tea[i]})
                 for i, e in enumerate(examples)]
        usable = [b for b in batch if b.extras["teacher_ok"] > 0 or (cfg.method == "scope" and b.extras["correct"] > 0)]
        if usable:
            tcfg = replace(cfg.train, seed=cfg.seed * 1000 + it, epochs=float(cfg.epochs), max_steps=0,
                           dvclive=False, log_dir="", progress=False)
            model.train()
            train(model, usable, [], tcfg, done / "run", distill_loss_fn(cfg, teacher.model), pad_id=pad)
            model.eval()
        else:
            messages.append("no sample has a teacher signal: update skipped")
        res = DistillIteration(it, _greedy(model, tok, test, cfg, s_prompt), success_rate(traj), len(batch),
                               len(batch) - len(usable), messages)
        save_model_dir(done / "model", model, tok, {"iteration": it, "config": asdict(cfg)})
        tmp = done / "result.json.tmp"
        tmp.write_text(json.dumps(asdict(res), indent=1))
        tmp.replace(done / "result.json")
        shutil.rmtree(done / "run", ignore_errors=True)
        results.append(res)
        if log is not None:
            log({"test_success": res.test_success, "rollout_success": res.rollout_success}, it)
    return model, tok, refs, results


@dataclass(frozen=True)
class TeacherDivergence:
    """How far a student's next-token distributions are from the teacher's on given
    examples (teacher-forced, action tokens only; demonstrations or the student's own
    samples): the distributional gap that the distillation losses shrink, beside the
    success gap that the grid measures."""

    reverse_kl: float     # mean over tokens of KL(student || teacher): OPD's objective
    forward_kl: float     # mean over tokens of KL(teacher || student)
    student_nll: float    # mean NLL of the examples' tokens under the student
    teacher_nll: float    # ... and under the teacher
    tokens: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def teacher_divergence(student: Any, teacher: Any, examples: Sequence[Example], *, pad_id: int,
                       batch_size: int = 32) -> TeacherDivergence:
    """`TeacherDivergence` of `student` from `teacher` over `examples` (full vocabulary;
    the two must share a tokenizer). Runs without gradients; the models' modes are kept."""
    sums = torch.zeros(4, dtype=torch.float64)
    n = 0
    with torch.no_grad():
        for s in range(0, len(examples), batch_size):
            batch = collate(examples[s: s + batch_size], pad_id)
            st = action_logits(student, batch)
            lp_s = torch.log_softmax(st.logits.double(), -1)
            lp_t = torch.log_softmax(action_logits(teacher, batch).logits.double(), -1)
            tgt = st.targets[:, None]
            sums += torch.stack([(lp_s.exp() * (lp_s - lp_t)).sum(-1).sum(), (lp_t.exp() * (lp_t - lp_s)).sum(-1).sum(),
                                 -lp_s.gather(-1, tgt).sum(), -lp_t.gather(-1, tgt).sum()])
            n += len(st.targets)
    mean = (sums / n).tolist() if n else [math.nan] * 4
    return TeacherDivergence(*mean, tokens=n)


def gap_closed(before: float, after: float, teacher: float) -> float:
    """(after - before) / (teacher - before); NaN when the teacher is no better."""
    return (after - before) / (teacher - before) if teacher > before else math.nan


def _greedy(model: Any, tok: Any, test: Sequence[Task], cfg: DistillConfig, prompt: PromptConfig) -> float:
    traj = run_policy(model, tok, test, injector=None, k=1, temperature=0.0, seed=cfg.seed, iteration=0,
                      batch_size=cfg.batch_size, label="distill-eval", prompt=prompt, max_new_tokens=cfg.max_new_tokens)
    rate = success_rate(traj)
    return rate if math.isfinite(rate) else 0.0
