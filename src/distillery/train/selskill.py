"""SelSkill: learn when to invoke a skill, from invoke/skip branches of the same prefix.

Setting (reference/algorithms.md section 3). The environment gains one tool,
``use_skill(name)``: the harness answers it with the named skill's procedure as the next
observation (the procedure is then in the context, as a past turn) and the environment's
state is untouched. Each episode is offered its family's skill from a fixed library (the
`mine` stage's bank) by one line under the first observation.

**Skill-enabled initialisation.** The paper starts from a policy that RL already taught to
use skills. Ours never saw the tool: shown the offer line or a skill's text it fails every
task (measured: 0 of 40 held-out tasks against 10 of 40 without them). So the round loop
starts from the warm-up student fine-tuned for `init_steps` on the oracle's demonstrations
in three equal, hashed variants per episode: no library offered; offered and skipped; and
offered and invoked at step 0 (the skill's text is then the observation before the oracle's
first action). The policy learns the tool's syntax and to act with a skill in context, and
that invoking is a coin flip; *when* to invoke is left to the rounds. [our substitution for
the paper's RL initialisation]

Each round k:

1. **Base rollouts.** The policy samples K episodes of each of a slice of learning tasks
   (one group per task) in the skill-enabled environment.
2. **Episode pairs.** Within a task's group, a successful episode (chosen) against a
   failed one (rejected).
3. **Decision points.** At every step of a base episode before its first invocation, the
   policy's predictive entropy H_t = -sum_v p(v | h_t) log p(v | h_t) of the *first* action
   token (where the next tool, `use_skill` included, is chosen; our reading of "predictive
   token entropy at candidate points"). The `branches_per_episode` most uncertain steps are
   branched. Entropy only picks where to branch; it is never a label.
4. **Controlled invoke/skip pairs.** From the identical prefix h_t (the base episode's
   actions replayed in a fresh sandbox: the environment is deterministic), branch A is
   forced to invoke the offered skill at t and then samples on; branch B, the skip branch,
   is the base episode itself, which did not invoke at t: an unbiased sample of "skip"
   because t was chosen from the prefix alone. Labels (the paper's rule): success beats
   failure; if both succeed, fewer environment steps after the branch point win (the
   `use_skill` call itself is not an environment step); a tie or two failures are discarded.
5. **Update.** Joint DPO, L = L_DPO(episode pairs) + L_DPO(local pairs), weighted 1 : 1
   (`train.losses.dpo_loss`; the paper reports no weighting), run by the training loop
   (`JointDPO` over `train.data.ExampleGroups`: a pair is a group). Log pi(y) is the sum of
   the action tokens' log-probs over the episode's steps, each scored under the prompt the
   policy acted on; for a local pair only the steps of the first `local_turns` assistant
   turns from the branch point count, the branch turn itself first (the shared prefix is
   excluded; `pair_sides`). [secondary: SelSkill's best ablation scores 3 turns after the
   branch point; counting the branch turn as the first is our reading.] The reference is
   the policy at the start of the round (our reading: the pairs are regenerated each round
   with the updated policy, and the paper does not say which reference it keeps).
6. **Evaluation.** Greedy on the test tasks: the trained policy deciding for itself
   (`selskill`), with task success, calls per episode, environment steps per episode and
   *execution precision* = valid, complete invocations / attempted invocations (an attempt
   is any action naming `use_skill`; valid and complete = it parses, with its required
   argument, and names a skill of the library). The starting policy is measured once in
   three arms: `never` (no library offered: the plain environment), `always` (the offered
   skill invoked by the harness at step 0, then the policy acts) and `free` (offered, the
   policy decides). The forced calls of `always` are valid by construction; its precision
   counts only the calls the policy writes itself.

Rounds are checkpointed (`<run>/round-<k>/`: model and result); a rerun skips finished
rounds. Everything is seeded by (seed, round), so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import polars as pl
import torch

from distillery.agents.hf import policy_from_model
from distillery.agents.prompts import PromptConfig
from distillery.config import _f
from distillery.envs.actions import format_call, parse_action
from distillery.envs.base import Environment, ToolParam, ToolSpec
from distillery.rollout import EpisodeJob, RolloutConfig, Trajectories, episode_seed, run_batch
from distillery.train.config import OnPolicyConfig, TrainConfig
from distillery.train.data import Example, ExampleGroups, GroupBatch, collate
from distillery.train.internalize import model_prompt
from distillery.train.loop import action_logits, train
from distillery.train.losses import dpo_loss
from distillery.train.rl import learning_slice, score_examples, step_examples, tempered_logprobs
from distillery.types import ActionOutput, Context, Experience, StepResult, Task, ToolCall

USE_SKILL = ToolSpec("use_skill", "Load a skill's procedure into the context.",
                     (ToolParam("name", description="the skill's name, as offered", kind="text"),))
OFFER_TEMPLATE = 'Skill available: use_skill(name="{name}")'
ARMS = ("never", "always", "free")


@dataclass
class SelSkillConfig(OnPolicyConfig):
    """`selskill` stage: DPO on invoke/skip pairs so the policy learns when a skill helps."""

    section: ClassVar[str] = "selskill"

    model_dir: str = _f("models/warmup", "the policy to start from")
    include_retired: bool = _f(True, "offer a family's best skill even if validation retired it: "
                                     "the policy must learn to skip a skill that does not help")
    rounds: int = _f(3, "sample pairs -> DPO rounds (the paper: 2-3)")
    tasks_per_family: int = _f(2, "learning tasks per family per round (a different slice each round)")
    k: int = _f(4, "base episodes per task")
    temperature: float = _f(0.7, "sampling temperature of the base episodes and branches")
    branches_per_episode: int = _f(1, "decision points branched per base episode (highest entropy first)")
    episode_pairs_per_task: int = _f(2, "success/failure pairs per task group at most")
    local_turns: int = _f(3, "assistant turns from the branch point a local pair is scored on (paper's best)")
    beta: float = _f(0.1, "DPO beta (not reported by the paper; TRL's default)")
    lr: float = _f(1e-4, "AdamW learning rate of the DPO update")
    epochs: int = _f(2, "passes over each round's pairs")
    pairs_per_batch: int = _f(8, "preference pairs per optimiser step")
    max_grad_norm: float = _f(1.0, "gradient clipping")
    sft_weight: float = _f(0.0, "weight of an NLL term on the chosen sides' action tokens (RPO-style; 0 = "
                                "the paper's pure DPO)")
    seed: int = _f(0, "seeds rollouts, branches and the pair order")
    init_steps: int = _f(300, "skill-enabled initialisation: SFT steps on the oracle's demonstrations (0 = none)")
    init: TrainConfig = field(default_factory=lambda: TrainConfig(
        lr=5e-4, min_lr_ratio=0.1, warmup_steps=20, batch_size=16, weight_decay=0.0, save_every=100,
        keep_checkpoints=1), metadata={"help": "the optimiser of the initialisation (max_steps is init_steps)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rounds < 1 or self.tasks_per_family < 1 or self.epochs < 1:
            raise ValueError("selskill.rounds, tasks_per_family and epochs must be >= 1")
        if self.branches_per_episode < 0 or self.local_turns < 1 or self.pairs_per_batch < 1:
            raise ValueError("selskill.branches_per_episode must be >= 0, local_turns and pairs_per_batch >= 1")
        if self.beta <= 0 or self.max_grad_norm <= 0:
            raise ValueError("selskill.beta and selskill.max_grad_norm must be > 0")
        if self.lr <= 0:
            raise ValueError(f"selskill.lr must be > 0, got {self.lr}")
        if self.sft_weight < 0:
            raise ValueError(f"selskill.sft_weight must be >= 0 (0 = pure DPO), got {self.sft_weight}")


# ---------------------------------------------------------------------------------------
# The use_skill tool
# ---------------------------------------------------------------------------------------


def skill_library(skills: Sequence[Experience], *, include_retired: bool = True) -> dict[str, Experience]:
    """One skill per family, keyed by family: the highest utility, then the most evidence."""
    out: dict[str, Experience] = {}
    for s in sorted(skills, key=lambda s: (s.family, -s.utility, -s.counter, s.exp_id)):
        if s.kind != "skill" or (s.status == "retired" and not include_retired):
            continue
        out.setdefault(s.family, s)
    return out


def invocation(skill: Experience) -> str:
    """The action text that invokes `skill`."""
    return format_call(ToolCall("use_skill", {"name": skill.exp_id}))


_CALL_NAME = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)")


def is_invocation(action_text: str) -> bool:
    """Whether an action attempts `use_skill` (valid or not): what precision counts. The
    text syntax's call name, or the JSON form's "tool", must be exactly `use_skill`."""
    text = action_text.strip()
    if text.startswith("{"):
        try:
            body = json.loads(text)
        except ValueError:
            return False        # not parseable as JSON: the environment reports it, not an attempt
        return isinstance(body, dict) and body.get("tool") == "use_skill"
    m = _CALL_NAME.match(text)
    return bool(m and m.group(1) == "use_skill")


def skill_text(skill: Experience) -> str:
    from distillery.mining.skills import skill_prompt_text

    return skill_prompt_text(skill)


class SkillToolEnv:
    """`inner` with SelSkill's `use_skill(name)` tool (an `Environment`).

    The offered skill (the task family's, from `library`) is announced under the first
    observation. An invocation is answered by the harness: a valid one returns the skill's
    procedure as the observation; an unknown name or a malformed call is an invalid action
    that says what was wrong. Neither touches the sandbox's state; every other action goes
    to `inner` unchanged."""

    def __init__(self, inner: Environment, library: Mapping[str, Experience]) -> None:
        self.inner = inner
        self.name = f"{inner.name}+skills"
        self.by_name = {s.exp_id: s for s in library.values()}
        self.library = library

    def reset(self, task: Task) -> str:
        obs = self.inner.reset(task)
        offered = self.library.get(task.family)
        return obs if offered is None else f"{obs}\n{OFFER_TEMPLATE.format(name=offered.exp_id)}"

    def step(self, action_text: str) -> StepResult:
        if not is_invocation(action_text):
            return self.inner.step(action_text)
        parsed = parse_action(action_text, [USE_SKILL])
        if not parsed.valid or parsed.call is None:
            return StepResult(f"Invalid action: {parsed.error}", 0.0, False, tool="use_skill", valid=False,
                              error=parsed.error, state_hash=self.inner.state_hash())
        name = str(parsed.call.args.get("name", ""))
        args = json.dumps(parsed.call.args, sort_keys=True)
        skill = self.by_name.get(name)
        if skill is None:
            err = f"no skill named {name!r}"
            return StepResult(f"Invalid action: {err}", 0.0, False, tool="use_skill", args_json=args, valid=False,
                              error=err, state_hash=self.inner.state_hash())
        return StepResult(f"Skill {name}: {skill_text(skill)}", 0.0, False, tool="use_skill", args_json=args,
                          state_hash=self.inner.state_hash())

    def verify(self) -> Any:
        return self.inner.verify()

    def state_hash(self) -> str:
        return self.inner.state_hash()

    def close(self) -> None:
        self.inner.close()


@dataclass
class ForcedPrefixPolicy:
    """Plays each episode's forced actions first (a replayed prefix, a forced invocation),
    then lets `base` act. Forced steps record no tokens and no log-prob."""

    base: Any
    forced: Mapping[str, Sequence[str]]
    name: str = ""
    model: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or self.base.name
        self.model = self.model or self.base.model

    def act(self, contexts: Sequence[Context]) -> list[ActionOutput]:
        out: list[ActionOutput | None] = [None] * len(contexts)
        free = []
        for i, c in enumerate(contexts):
            script = self.forced.get(c.episode_id, ())
            if c.t < len(script):
                out[i] = ActionOutput(text=script[c.t], logprob=0.0)
            else:
                free.append(i)
        if free:
            for i, a in zip(free, self.base.act([contexts[i] for i in free]), strict=True):
                out[i] = a
        return [a for a in out if a is not None]


# ---------------------------------------------------------------------------------------
# Pairs (pure)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreferencePair:
    """Chosen and rejected episodes, scored on their steps [start, start + n_steps)."""

    kind: str                 # "episode" | "local"
    chosen: str               # episode_id
    rejected: str
    start: int = 0            # the branch point for a local pair
    n_steps: int | None = None  # None: to the end


def episode_pairs(episodes: pl.DataFrame, max_per_group: int) -> list[PreferencePair]:
    """Within each group (task), successes paired in order with failures, at most
    `max_per_group` pairs; a group with no success or no failure gives none."""
    out = []
    for _, g in episodes.sort("episode_id").group_by("group", maintain_order=True):
        wins = g.filter(pl.col("success"))["episode_id"].to_list()
        losses = g.filter(~pl.col("success"))["episode_id"].to_list()
        out += [PreferencePair("episode", w, lo) for w, lo in list(zip(wins, losses, strict=False))[:max_per_group]]
    return out


def prefer(a_success: bool, a_steps_after: int, b_success: bool, b_steps_after: int) -> int:
    """SelSkill's labelling rule for two branches of one prefix: +1 if A is preferred, -1 if
    B, 0 to discard (both failed, or both succeeded in as many steps)."""
    if a_success != b_success:
        return 1 if a_success else -1
    if not a_success or a_steps_after == b_steps_after:
        return 0
    return 1 if a_steps_after < b_steps_after else -1


def env_steps_after(steps: pl.DataFrame, episode_id: str, t: int) -> int:
    """Environment steps of an episode from step t on (`use_skill` calls do not count)."""
    s = steps.filter((pl.col("episode_id") == episode_id) & (pl.col("t") >= t))
    return int((s["tool"] != "use_skill").sum())


def first_invocation(steps: pl.DataFrame) -> dict[str, int]:
    """Each episode's first step that attempts `use_skill` (episodes without one absent)."""
    out: dict[str, int] = {}
    for ep, t, text in steps.sort(["episode_id", "t"]).select("episode_id", "t", "action_text").iter_rows():
        if ep not in out and is_invocation(text):
            out[ep] = t
    return out


def decision_points(steps: pl.DataFrame, entropy: Mapping[tuple[str, int], float], per_episode: int,
                    offered: Mapping[str, bool]) -> list[tuple[str, int]]:
    """The `per_episode` highest-entropy steps of each episode that is offered a skill,
    among its steps before its first invocation; ties go to the earlier step."""
    first = first_invocation(steps)
    by_ep: dict[str, list[tuple[float, int]]] = {}
    for ep, t in steps.select("episode_id", "t").iter_rows():
        if offered.get(ep) and t < first.get(ep, 1 << 30) and (ep, t) in entropy:
            by_ep.setdefault(ep, []).append((-entropy[(ep, t)], t))
    return [(ep, t) for ep in sorted(by_ep) for _, t in sorted(by_ep[ep])[:per_episode]]


def invocation_stats(steps: pl.DataFrame, episodes: pl.DataFrame, forced: Mapping[str, int] | None = None
                     ) -> dict[str, Any]:
    """Success, calls per episode, environment steps per episode, and execution precision
    over the invocations the policy wrote (the first `forced[episode]` steps are the
    harness's and are left out of the precision)."""
    forced = forced or {}
    rows = [(ep, t, text, valid) for ep, t, text, valid
            in steps.select("episode_id", "t", "action_text", "valid").iter_rows()
            if is_invocation(text) and t >= forced.get(ep, 0)]
    attempted, valid = len(rows), sum(1 for r in rows if r[3])
    n = max(episodes.height, 1)
    calls = int(sum(1 for text in steps["action_text"].to_list() if is_invocation(text)))
    return {
        "success": float(episodes["success"].mean()) if episodes.height else float("nan"),
        "episodes": episodes.height,
        "calls_per_episode": calls / n,
        "attempted": attempted, "valid": valid,
        "precision": valid / attempted if attempted else None,
        "env_steps_per_episode": int((steps["tool"] != "use_skill").sum()) / n if steps.height else 0.0,
    }


def init_variant(episode_id: str, seed: int) -> str:
    """An oracle episode's variant in the initialisation data: plain | skip | invoke, by hash."""
    h = int.from_bytes(hashlib.blake2b(f"{seed}:{episode_id}".encode(), digest_size=4).digest(), "little")
    return ("plain", "skip", "invoke")[h % 3]


def skill_enabled_steps(episodes: pl.DataFrame, steps: pl.DataFrame, families: Mapping[str, str],
                        library: Mapping[str, Experience], seed: int) -> pl.DataFrame:
    """The oracle's steps rewritten as the skill-enabled environment would show them.

    `families` maps task_id to family. Per episode (`init_variant`): *plain* is unchanged;
    *skip* gets the offer line under its first observation; *invoke* also gets a first step
    that invokes the offered skill, whose answer (the skill's text) is the observation the
    oracle's first action follows. Episodes whose family has no skill stay plain."""
    fam = episodes.select("episode_id", pl.col("task_id").replace_strict(families, default=None).alias("_family"))
    rows = []
    for row in steps.join(fam, on="episode_id", how="left").sort(["episode_id", "t"]).iter_rows(named=True):
        skill = library.get(row.pop("_family") or "")
        variant = init_variant(row["episode_id"], seed) if skill is not None else "plain"
        if variant == "plain":
            rows.append(row)
            continue
        if row["t"] == 0:
            offered = f"{row['observation']}\n{OFFER_TEMPLATE.format(name=skill.exp_id)}"
            if variant == "skip":
                rows.append({**row, "observation": offered})
                continue
            answer = f"Skill {skill.exp_id}: {skill_text(skill)}"
            rows.append({**row, "observation": offered, "action_text": invocation(skill), "tool": "use_skill",
                         "args_json": json.dumps({"name": skill.exp_id}), "valid": True, "error": "",
                         "feedback": answer})
            rows.append({**row, "t": 1, "observation": answer})
            continue
        rows.append({**row, "t": row["t"] + (variant == "invoke")})
    return pl.DataFrame(rows, schema=steps.schema)


def skill_enabled_init(model: Any, tok: Any, by_id: Mapping[str, Task], demos: tuple[pl.DataFrame, pl.DataFrame],
                       library: Mapping[str, Experience], cfg: SelSkillConfig, prompt: PromptConfig,
                       out_dir: Path) -> dict[str, Any]:
    """Fine-tune `model` in place for `cfg.init_steps` on the skill-enabled demonstrations."""
    from distillery.train.examples import sft_examples

    episodes, steps = demos
    episodes = episodes.filter(pl.col("task_id").is_in(list(by_id)))
    families = {t: by_id[t].family for t in episodes["task_id"].to_list()}
    st = skill_enabled_steps(episodes, steps.filter(pl.col("episode_id").is_in(episodes["episode_id"])),
                             families, library, cfg.seed)
    examples, stats = sft_examples(by_id, episodes, st, tok, prompt, only_success=True)
    tcfg = replace(cfg.init, max_steps=cfg.init_steps, seed=cfg.seed, dvclive=False, log_dir="", progress=False)
    model.train()
    result = train(model, examples, [], tcfg, out_dir, pad_id=tok.pad_token_id)
    model.eval()
    variants = pl.Series([init_variant(e, cfg.seed) if families.get(t) in library else "plain"
                          for e, t in episodes.select("episode_id", "task_id").iter_rows()])
    return {"examples": stats.examples, "steps": result.steps,
            "variants": {v: int((variants == v).sum()) for v in ("plain", "skip", "invoke")},
            "train_loss": result.metrics.get("train_loss")}


# ---------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------


@torch.no_grad()
def first_token_entropy(model: Any, examples: Sequence[Example], *, pad_id: int, batch_size: int = 64
                        ) -> list[float]:
    """Entropy (nats, temperature 1) of each example's first target token's distribution."""
    was = model.training
    model.eval()
    out = [float("nan")] * len(examples)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]))
    for s in range(0, len(order), batch_size):
        idx = order[s: s + batch_size]
        al = action_logits(model, collate([examples[i] for i in idx], pad_id).to(model.device))
        logp = torch.log_softmax(al.logits.float(), -1)
        ent = -(logp.exp() * logp).sum(-1)
        seen: set[int] = set()
        for j, r in enumerate(al.rows.tolist()):   # targets come row-major, left to right
            if r not in seen:
                seen.add(r)
                out[idx[r]] = float(ent[j])
    if was:
        model.train()
    return out


def pair_sides(pairs: Sequence[PreferencePair], keys: Sequence[tuple[str, int]], n_steps: Mapping[str, int]
               ) -> list[tuple[list[int], list[int]]]:
    """For each pair, the indices into `keys` of the chosen and the rejected side's scored steps."""
    index = {k: i for i, k in enumerate(keys)}

    def side(ep: str, p: PreferencePair) -> list[int]:
        end = n_steps.get(ep, 0) if p.n_steps is None else min(n_steps.get(ep, 0), p.start + p.n_steps)
        return [index[(ep, t)] for t in range(p.start, end) if (ep, t) in index]

    return [(side(p.chosen, p), side(p.rejected, p)) for p in pairs]


def pair_order(n_pairs: int, pairs_per_batch: int, seed: int, epoch: int) -> list[list[int]]:
    """Epoch `epoch`'s micro-batches of pair indices: the (epoch + 1)-th permutation a torch
    generator seeded with `seed` draws, cut into runs of `pairs_per_batch`."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epoch + 1):
        perm = torch.randperm(n_pairs, generator=gen).tolist()
    return [perm[s: s + pairs_per_batch] for s in range(0, n_pairs, pairs_per_batch)]


class JointDPO:
    """SelSkill's loss on a `GroupBatch` of preference pairs (one group per pair: its two
    sides' scored steps): `dpo_loss` over its episode pairs plus `dpo_loss` over its local
    pairs (1 : 1), each side's log pi the sum of its steps' action log-probs, plus
    `sft_weight` x the chosen sides' mean NLL. Records every pair's implicit-reward margin
    as it goes: the update reports their mean and the share above 0."""

    def __init__(self, pairs: Sequence[PreferencePair], sides: Sequence[tuple[list[int], list[int]]],
                 ref_sums: Sequence[float], *, beta: float, sft_weight: float) -> None:
        self.pairs, self.sides, self.beta, self.sft_weight = pairs, sides, beta, sft_weight
        self.ref = torch.tensor(ref_sums, dtype=torch.float32)
        self.accuracies: list[float] = []
        self.margins: list[float] = []

    def __call__(self, model: Any, gb: GroupBatch) -> tuple[torch.Tensor, dict[str, float]]:
        logp, al = tempered_logprobs(model, gb.batch, 1.0)
        sums = torch.zeros(len(gb.rows), device=logp.device).index_add(0, al.rows, logp)
        pos, sides, ref = gb.rows, self.sides, self.ref

        def total(members: list[int]) -> torch.Tensor:
            return sums[[pos[i] for i in members]].sum() if members else sums.new_zeros(())

        loss = logp.new_zeros(())
        if self.sft_weight > 0:
            # Mean NLL over the chosen sides' tokens: DPO alone can lower the likelihood of
            # chosen and rejected alike (a known failure on small policies).
            chosen = sorted({pos[i] for j in gb.groups for i in sides[j][0]})
            token_rows = torch.isin(al.rows, torch.tensor(chosen, dtype=al.rows.dtype, device=al.rows.device))
            if bool(token_rows.any()):
                loss = loss - self.sft_weight * logp[token_rows].mean()
        for kind in ("episode", "local"):
            js = [j for j in gb.groups if self.pairs[j].kind == kind]
            if not js:
                continue
            pc = torch.stack([total(sides[j][0]) for j in js])
            pr = torch.stack([total(sides[j][1]) for j in js])
            rc = torch.stack([ref[sides[j][0]].sum() for j in js]).to(pc.device)
            rr = torch.stack([ref[sides[j][1]].sum() for j in js]).to(pc.device)
            loss = loss + dpo_loss(pc, pr, rc, rr, beta=self.beta)
            with torch.no_grad():
                m = (pc - rc) - (pr - rr)
                self.accuracies += (m > 0).float().tolist()
                self.margins += m.tolist()
        return loss, {}


def dpo_update(model: Any, examples: Sequence[Example], ref_sums: Sequence[float], pairs: Sequence[PreferencePair],
               sides: Sequence[tuple[list[int], list[int]]], cfg: SelSkillConfig, *, pad_id: int, seed: int
               ) -> dict[str, float]:
    """`cfg.epochs` passes of `JointDPO` over `pairs`, `cfg.pairs_per_batch` pairs a step in
    `pair_order`, through the training loop: AdamW (weight decay 0, torch's default
    implementation) at the constant `cfg.lr`, the gradient norm clipped to `cfg.max_grad_norm`.
    Each step scores only the steps its pairs need."""
    objective = JointDPO(pairs, sides, ref_sums, beta=cfg.beta, sft_weight=cfg.sft_weight)
    groups = ExampleGroups(members=[chosen + rejected for chosen, rejected in sides],
                           order=lambda epoch: pair_order(len(pairs), cfg.pairs_per_batch, seed, epoch))
    tcfg = TrainConfig(lr=cfg.lr, min_lr_ratio=1.0, warmup_steps=0, epochs=float(cfg.epochs),
                       batch_size=cfg.pairs_per_batch, max_seq_len=max(len(e) for e in examples), weight_decay=0.0,
                       adam_beta2=0.999, grad_clip=cfg.max_grad_norm, seed=seed, log_every=1, resume=False,
                       mixed_precision="no", dvclive=False, progress=False)
    # Nothing is written there (no checkpoints, no DVCLive): a round, not a step, is what resumes.
    with tempfile.TemporaryDirectory() as scratch:
        result = train(model, examples, [], tcfg, scratch, objective, pad_id=pad_id, groups=groups,
                       fused_adamw=False)
    losses = [row["train/loss"] for row in result.history if "train/loss" in row]
    acc, margins = objective.accuracies, objective.margins
    return {"dpo_loss": sum(losses) / max(len(losses), 1), "reward_accuracy": sum(acc) / max(len(acc), 1),
            "margin": sum(margins) / max(len(margins), 1), "optimizer_steps": result.steps}


# ---------------------------------------------------------------------------------------
# Rollouts
# ---------------------------------------------------------------------------------------


def rollout(model: Any, tok: Any, tasks: Sequence[Task], library: Mapping[str, Experience] | None,
            cfg: SelSkillConfig, prompt: PromptConfig, *, k: int, temperature: float, seed: int, label: str,
            forced: Mapping[str, Sequence[str]] | None = None, jobs: Sequence[EpisodeJob] | None = None
            ) -> Trajectories:
    """K episodes per task (or the given `jobs`) with the skill tool when `library` is given."""
    rcfg = RolloutConfig(k=k, seed=seed, batch_size=cfg.batch_size)
    if jobs is None:
        jobs = [EpisodeJob(task=t, sample=s, seed=episode_seed(seed, t.task_id, s),
                           episode_id=f"{t.task_id}:{label}:k{s}", group=t.task_id) for t in tasks for s in range(k)]
    policy = policy_from_model(model, tok, label, prompt=prompt, temperature=temperature,
                               max_new_tokens=cfg.max_new_tokens)
    if forced:
        policy = ForcedPrefixPolicy(policy, forced)
    wrap = (lambda env: SkillToolEnv(env, library)) if library is not None else None
    return run_batch(policy, jobs, rcfg, wrap_env=wrap)


def evaluate_arms(model: Any, tok: Any, test: Sequence[Task], library: Mapping[str, Experience],
                  cfg: SelSkillConfig, prompt: PromptConfig, arms: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Greedy, one episode per test task, in each of `arms` (see the module docstring)."""
    out = {}
    for arm in arms:
        if arm not in ARMS:
            raise ValueError(f"unknown arm {arm!r}; known: {ARMS}")
        forced: dict[str, list[str]] = {}
        if arm == "always":
            forced = {f"{t.task_id}:eval-{arm}:k0": [invocation(library[t.family])]
                      for t in test if t.family in library}
        traj = rollout(model, tok, test, None if arm == "never" else library, cfg, prompt, k=1, temperature=0.0,
                       seed=cfg.seed, label=f"eval-{arm}", forced=forced)
        out[arm] = invocation_stats(traj.steps, traj.episodes, {e: len(a) for e, a in forced.items()})
    return out


# ---------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------


@dataclass
class SelSkillRound:
    round: int
    test: dict[str, Any]              # the trained policy deciding for itself (invocation_stats)
    base_success: float               # this round's sampled base episodes
    branch_success: float             # the forced-invocation branches
    episode_pairs: int
    local_pairs: int
    invoke_preferred: int             # local pairs where the invoke branch won
    discarded_both_failed: int
    discarded_tie: int
    trained: bool
    update: dict[str, float] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)


def one_round(model: Any, tok: Any, learn: Sequence[Task], by_id: Mapping[str, Task],
              library: Mapping[str, Experience], cfg: SelSkillConfig, prompt: PromptConfig, r: int
              ) -> SelSkillRound:
    """Sample, pair and train once (the model is updated in place); no evaluation."""
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    seed = cfg.seed * 1000 + r
    slice_ = learning_slice(learn, cfg.tasks_per_family, r)
    base = rollout(model, tok, slice_, library, cfg, prompt, k=cfg.k, temperature=cfg.temperature, seed=seed,
                   label=f"base-r{r}")
    ep_pairs = episode_pairs(base.episodes, cfg.episode_pairs_per_task)
    zero = pl.DataFrame(schema={"episode_id": pl.String, "t": pl.Int64, "advantage": pl.Float64})

    # Decision points, by the entropy of the first action token.
    base_ex, base_keys = step_examples(by_id, base, zero, tok, prompt, {})
    ents = first_token_entropy(model, base_ex, pad_id=pad)
    entropy = dict(zip(base_keys, ents, strict=True))
    task_of = dict(base.episodes.select("episode_id", "task_id").iter_rows())
    offered = {ep: by_id[task_of[ep]].family in library for ep in task_of}
    points = decision_points(base.steps, entropy, cfg.branches_per_episode, offered)

    # Invoke branches from the identical prefix; the base episode is the skip branch.
    actions = {ep: [a for _, a in sorted(g.select("t", "action_text").iter_rows())]
               for (ep,), g in base.steps.group_by("episode_id")}
    forced, jobs, origin = {}, [], {}
    for ep, t in points:
        task = by_id[task_of[ep]]
        bid = f"{ep}:b{t}"
        forced[bid] = actions[ep][:t] + [invocation(library[task.family])]
        jobs.append(EpisodeJob(task=task, sample=0, seed=episode_seed(seed, bid, 0), episode_id=bid, group=task.task_id))
        origin[bid] = (ep, t)
    branches = rollout(model, tok, [], library, cfg, prompt, k=1, temperature=cfg.temperature, seed=seed,
                       label=f"branch-r{r}", forced=forced, jobs=jobs) if jobs else None
    local, invoke_won, both_failed, ties = [], 0, 0, 0
    if branches is not None:
        succ = dict(pl.concat([base.episodes, branches.episodes]).select("episode_id", "success").iter_rows())
        for bid, (ep, t) in sorted(origin.items()):
            if bid not in succ:
                continue
            label = prefer(succ[bid], env_steps_after(branches.steps, bid, t), succ[ep],
                           env_steps_after(base.steps, ep, t))
            if label == 0:
                both_failed += int(not succ[bid] and not succ[ep])
                ties += int(succ[bid] and succ[ep])
                continue
            invoke_won += int(label > 0)
            w, lo = (bid, ep) if label > 0 else (ep, bid)
            local.append(PreferencePair("local", w, lo, start=t, n_steps=cfg.local_turns))
    pairs = ep_pairs + local
    messages = []
    rnd = dict(round=r, base_success=float(base.episodes["success"].mean()),
               branch_success=float(branches.episodes["success"].mean()) if branches is not None else float("nan"),
               episode_pairs=len(ep_pairs), local_pairs=len(local), invoke_preferred=invoke_won,
               discarded_both_failed=both_failed, discarded_tie=ties)
    if not pairs:
        messages.append("no preference pair (no group mixes success and failure, no branch pair decides): "
                        "update skipped")
        return SelSkillRound(test={}, trained=False, messages=messages, **rnd)
    everything = base if branches is None else Trajectories.concat([base, branches])
    examples, keys = step_examples(by_id, everything, zero, tok, prompt, {})
    n_steps = dict(everything.episodes.select("episode_id", "n_steps").iter_rows())
    sides = pair_sides(pairs, keys, n_steps)
    ref = [sum(tl) for tl in score_examples(model, examples, temperature=1.0, pad_id=pad)]
    update = dpo_update(model, examples, ref, pairs, sides, cfg, pad_id=pad, seed=seed)
    return SelSkillRound(test={}, trained=True, update=update, messages=messages, **rnd)


def run_selskill(cfg: SelSkillConfig, tasks: Sequence[Task], skills: Sequence[Experience], run_dir: str | Path,
                 demos: tuple[pl.DataFrame, pl.DataFrame] | None = None,
                 log: Callable[[dict[str, float], int], None] | None = None,
                 ) -> tuple[Any, Any, dict[str, Any], list[SelSkillRound]]:
    """The whole loop; returns (model, tokenizer, the starting policy's arms and the
    initialisation's record, rounds). `demos` (episodes, steps) are the initialisation's."""
    from distillery.lm.model import load_model_dir, save_model_dir

    run_dir = Path(run_dir)
    learn = [t for t in tasks if t.split == cfg.learn_split]
    test = [t for t in tasks if t.split == cfg.test_split]
    if not learn or not test:
        raise ValueError(f"selskill: no {cfg.learn_split!r} or {cfg.test_split!r} tasks; set tasks.heldout_profiles "
                         "so the tasks stage generates them")
    library = skill_library(skills, include_retired=cfg.include_retired)
    by_id = {t.task_id: t for t in tasks}
    prompt = model_prompt(cfg.model_dir)
    loaded = load_model_dir(cfg.model_dir)
    model, tok = loaded.model, loaded.tokenizer
    model.eval()
    start_file = run_dir / "before.json"
    init_dir = run_dir / "init"
    if start_file.is_file():
        before = json.loads(start_file.read_text())
        if (init_dir / "model").is_dir():
            model = load_model_dir(init_dir / "model").model
            model.eval()
    else:
        # The warm-up student as deployed (no library), then the skill-enabled start's arms.
        warmup = evaluate_arms(model, tok, test, library, cfg, prompt, ["never"])["never"]
        init: dict[str, Any] = {"steps": 0}
        if cfg.init_steps > 0 and library:
            if demos is None:
                raise ValueError("selskill: init_steps > 0 needs the oracle's demonstrations")
            init = skill_enabled_init(model, tok, by_id, demos, library, cfg, prompt, init_dir / "run")
            save_model_dir(init_dir / "model", model, tok, {"init": init, "config": asdict(cfg)})
            shutil.rmtree(init_dir / "run", ignore_errors=True)
        before = {"warmup_never": warmup, "init": init, **evaluate_arms(model, tok, test, library, cfg, prompt, ARMS)}
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = run_dir / "before.json.tmp"
        tmp.write_text(json.dumps(before, indent=1))
        tmp.replace(start_file)
    if log is not None:
        log(_live_row(before["free"]) | {"always_success": before["always"]["success"],
                                          "never_success": before["never"]["success"]}, -1)
    results: list[SelSkillRound] = []
    for r in range(cfg.rounds):
        done = run_dir / f"round-{r}"
        if (done / "result.json").is_file():
            results.append(SelSkillRound(**json.loads((done / "result.json").read_text())))
            model = load_model_dir(done / "model").model
            model.eval()
            continue
        if library:
            res = one_round(model, tok, learn, by_id, library, cfg, prompt, r)
        else:
            res = SelSkillRound(round=r, test={}, base_success=float("nan"), branch_success=float("nan"),
                                episode_pairs=0, local_pairs=0, invoke_preferred=0, discarded_both_failed=0,
                                discarded_tie=0, trained=False,
                                messages=["the skill library is empty (the mine stage found no skill): nothing "
                                          "to invoke, round skipped"])
        res.test = evaluate_arms(model, tok, test, library, cfg, prompt, ["free"])["free"]
        save_model_dir(done / "model", model, tok, {"round": r, "config": asdict(cfg)})
        tmp = done / "result.json.tmp"
        tmp.write_text(json.dumps(asdict(res), indent=1))
        tmp.replace(done / "result.json")
        results.append(res)
        if log is not None:
            log(_live_row(res.test) | {k: v for k, v in res.update.items() if k != "optimizer_steps"}, r)
    return model, tok, before, results


def _live_row(stats: Mapping[str, Any]) -> dict[str, float]:
    row = {"test_success": float(stats["success"]), "calls_per_episode": float(stats["calls_per_episode"])}
    if stats.get("precision") is not None:      # no attempted call: precision is undefined, not 0
        row["precision"] = float(stats["precision"])
    return row
