"""Does the environment's phrasebook wording matter? The same mined lessons, two wordings.

The rules summariser words each lesson through the environment's phrasebook (for STAGE, the
profiles' own sentences: "Saved attachments go in files/received/."), the text the warm-up
student learned to follow. `mining.rules.reword_neutrally` turns the same pool (same
lessons, conditions and order) into the miner's neutral wording, generated from the failed
checks alone ("save_attachment puts path at files/received/"). Injected step-wise into the
warm-up model on the held-out user's test tasks, greedy and over sampling seeds, the two
pools say how much of the mined pool's help is its wording. The injection, selector and
sampling settings are the `internalize` stage's, so the environment-worded arm is its teacher.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from distillery.envs.base import env_spec
from distillery.mining.rules import reword_neutrally
from distillery.train.internalize import (
    InternalizeConfig,
    evaluate_with,
    make_injector,
    model_prompt,
    run_policy,
    success_rate,
)
from distillery.types import Claim, Experience, Task

ARMS = ("plain", "environment", "neutral")
COMMAND = "dvc repro wording"


def wording_effect(cfg: InternalizeConfig, tasks: Sequence[Task], pool: Sequence[Experience]) -> dict[str, Any]:
    """Greedy and per-seed sampled success of `cfg.model_dir` on `cfg.test_split`: plain, with
    `pool` as mined (the environment's words) and with the same pool reworded neutrally."""
    from distillery.lm.model import load_model_dir

    test = [t for t in tasks if t.split == cfg.test_split]
    if not test:
        raise ValueError(f"wording: no {cfg.test_split!r} tasks in the task table")
    phrasebook = env_spec(test[0].env).phrasebook
    neutral = reword_neutrally(pool, phrasebook)
    injectors = {"plain": None,
                 "environment": make_injector(pool, cfg.injection, cfg.top_k, cfg.selector, cfg.scope_family),
                 "neutral": make_injector(neutral, cfg.injection, cfg.top_k, cfg.selector, cfg.scope_family)}
    base = load_model_dir(cfg.model_dir)
    model, tok, prompt = base.model, base.tokenizer, model_prompt(cfg.model_dir)
    greedy = {arm: evaluate_with(model, tok, test, inj, prompt=prompt, max_new_tokens=cfg.max_new_tokens)
              for arm, inj in injectors.items()}
    sampled = {str(seed): {arm: success_rate(run_policy(model, tok, test, injector=inj, k=1,
                                                        temperature=cfg.temperature, seed=seed, iteration=0,
                                                        batch_size=cfg.batch_size, label=f"wording-{arm}",
                                                        prompt=prompt, max_new_tokens=cfg.max_new_tokens))
                           for arm, inj in injectors.items()}
               for seed in cfg.eval_seeds}
    return {"env": test[0].env, "n_test": len(test), "temperature": cfg.temperature, "greedy": greedy,
            "sampled": sampled, "pool": [p.text for p in pool], "neutral_pool": [p.text for p in neutral],
            "reworded": sum(a.text != b.text for a, b in zip(pool, neutral, strict=True))}


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def wording_claims(m: dict[str, Any]) -> list[Claim]:
    """One row: the environment-worded pool against the neutral one (the rule of the teacher
    criterion: apart by more than two seed stds)."""
    seeds = list(m["sampled"])
    stats = {arm: _mean_std([m["sampled"][s][arm] for s in seeds]) for arm in ARMS}
    (em, es), (nm, ns), (pm, ps) = stats["environment"], stats["neutral"], stats["plain"]
    g = m["greedy"]
    return [Claim(
        paper="ours: mining design (no paper states it)",
        finding=f"mined lessons help more in the {m['env']} phrasebook's words than in neutral words",
        paper_value="- (our reading: the summariser should write in the words the student learned)",
        measured=f"phrasebook {em:.3f} ± {es:.3f} vs neutral {nm:.3f} ± {ns:.3f} (plain {pm:.3f} ± {ps:.3f})",
        holds=bool(em - nm > 2 * max(es, ns)),
        detail=(f"the warm-up model on {m['n_test']} held-out test tasks, the same {len(m['pool'])} mined lessons "
                f"({m['reworded']} reworded) injected step-wise, sampled at temperature {m['temperature']}; "
                f"holds means apart by more than two seed stds; greedy: phrasebook {g['environment']:.3f}, "
                f"neutral {g['neutral']:.3f}, plain {g['plain']:.3f}"),
        spread=f"seed std {es:.3f} phrasebook, {ns:.3f} neutral", seeds=f"sampling {', '.join(seeds)}",
        command=COMMAND)]
