"""A local transformers model as a batched policy.

Every `act` call renders the prompts of all active episodes (agents/prompts.py) and decodes
them together (lm/generate.py): one prefill and one forward pass per generated token for
the whole batch. The prompt format a model was trained with is recorded in its card and
used by default, so a model is always run the way it learned.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch

from distillery.agents.prompts import MARKERS, PromptConfig, render_prompt_ids
from distillery.envs.base import tool_specs
from distillery.lm.generate import Generation, PrefixState, SamplingConfig, generate
from distillery.types import ActionOutput, Context

# `act_deferring` returns once at most 1/DEFER_SHARE of its episodes are still generating
# (the share at which `generate` also compacts its batch). On the default student's test
# split in one batch, greedy, a rollout's decode passes fell from 259 to 165
# (docs/performance.md).
DEFER_SHARE = 8


def _row_seed(ctx: Context) -> int:
    h = hashlib.blake2b(f"{ctx.seed}:{ctx.episode_id}:{ctx.t}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & 0x7FFFFFFFFFFFFFFF


def resolve_device(device: str = "auto") -> torch.device:
    """`device` as a torch device ("auto": CUDA where there is one, else the CPU); a name torch
    does not know, or a CUDA device this machine does not have, is a ValueError saying so."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"device {device!r}: not a device torch knows (auto, cpu, cuda, cuda:1, ...)") from e
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA device is visible"
            raise ValueError(f"device {device!r}: {why} (torch {torch.__version__}); use cpu or auto")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return resolved


class HFPolicy:
    name = "hf"

    def __init__(
        self,
        model_dir: str,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_new_tokens: int = 96,
        prompt: dict[str, Any] | None = None,
        device: str = "auto",
        model: Any = None,
        tokenizer: Any = None,
        reuse_prefix: bool = True,
    ) -> None:
        """Load `model_dir` (a directory written by lm.model.save_model_dir, or any local
        checkpoint), or use an already-loaded `model`/`tokenizer` pair (`policy_from_model`)."""
        self.device = resolve_device(device)
        if model is None:
            from distillery.lm.model import load_model_dir

            model, tokenizer, card = load_model_dir(model_dir)
        else:
            card = {}
        self.lm = model.to(self.device)
        self.tok = tokenizer
        self.model = str(model_dir)  # what trajectories record as the model
        self.prompt = PromptConfig(**(prompt if prompt is not None else card.get("prompt", {})))
        self.sampling = SamplingConfig(temperature, top_p, max_new_tokens)
        stops = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        if self.prompt.style == "compact":
            stops.add(tokenizer.convert_tokens_to_ids(MARKERS["end"]))
        self.stop_ids = sorted(s for s in stops if s is not None)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]
        # Each episode's prompt at step t+1 starts with its prompt and action at step t:
        # keep their K/V and prefill only the new observation (most of a CPU step otherwise).
        self.reuse_prefix = reuse_prefix
        self._states: dict[str, PrefixState] = {}
        # Unfinished actions of `act_deferring`, per episode: (the turn's prompt, the generation so far).
        self._deferred: dict[str, tuple[list[int], Generation]] = {}

    def describe(self) -> dict[str, Any]:
        return {"model_dir": self.model, "sampling": asdict(self.sampling), "prompt": asdict(self.prompt)}

    def prompt_ids(self, contexts: Sequence[Context]) -> list[list[int]]:
        return [render_prompt_ids(c, self.tok, tool_specs(c.task.env), self.prompt) for c in contexts]

    def decode(self, gen: Generation) -> str:
        ids = gen.token_ids[:-1] if gen.stopped else gen.token_ids
        return self.tok.decode(ids, skip_special_tokens=False).strip()

    def act(self, contexts: Sequence[Context]) -> list[ActionOutput]:
        return [out for out in self._act(contexts, defer=False) if out is not None]

    def act_deferring(self, contexts: Sequence[Context]) -> list[ActionOutput | None]:
        """`act`, continuously batched across calls, for a caller that calls again with the
        same context while an action is unfinished (the rollout engine): the call returns
        once at most 1/DEFER_SHARE of its episodes are still generating, with None for
        those; the next call with the same context goes on with that action where it
        stopped, beside the other episodes' next turns, instead of every episode waiting
        on a tail of one-row passes. The actions are `act`'s, up to the float rounding of
        different batches."""
        return self._act(contexts, defer=True)

    def _act(self, contexts: Sequence[Context], defer: bool) -> list[ActionOutput | None]:
        prompts = self.prompt_ids(contexts)
        resume: list[Generation | None] = []
        for c, p in zip(contexts, prompts, strict=True):
            held = self._deferred.get(c.episode_id)
            resume.append(held[1] if held is not None and held[0] == p else None)   # the same turn: go on
        prefixes = [r.state if r is not None else self._states.get(c.episode_id) if self.reuse_prefix else None
                    for c, r in zip(contexts, resume, strict=True)]
        gens = generate(self.lm, [p + r.token_ids if r is not None else p for p, r in zip(prompts, resume, strict=True)],
                        stop_ids=self.stop_ids, pad_id=self.pad_id, sampling=self.sampling,
                        seeds=[_row_seed(c) for c in contexts], prefixes=prefixes, return_states=self.reuse_prefix,
                        defer_share=DEFER_SHARE if defer else 0, resume=resume)
        # Episodes absent from this call have ended (the rollout engine sends every live
        # episode each step): their states go.
        self._deferred = {c.episode_id: (p, g) for c, p, g in zip(contexts, prompts, gens, strict=True) if g.deferred}
        if self.reuse_prefix:
            self._states = {c.episode_id: g.state for c, g in zip(contexts, gens, strict=True)
                            if g.state is not None and not g.deferred}
        return [
            None if g.deferred else ActionOutput(
                text=self.decode(g), tokens_in=len(p), tokens_out=len(g.token_ids),
                logprob=float(sum(g.logprobs)), token_logprobs=g.logprobs, token_ids=g.token_ids,
                prompt_ids=p,
            )
            for p, g in zip(prompts, gens, strict=True)
        ]


def policy_from_model(model: Any, tokenizer: Any, name: str, *, prompt: PromptConfig, temperature: float = 0.0,
                      max_new_tokens: int = 96, device: str = "auto") -> HFPolicy:
    """A model held in memory (a training loop's, between its updates) as a policy.

    `name` is what its trajectories record as the policy and as the model: there is no
    model directory to name. `prompt` is required because there is no card to read it from:
    it must be the format the model was trained with.
    """
    policy = HFPolicy(name, temperature=temperature, max_new_tokens=max_new_tokens, prompt=asdict(prompt),
                      device=device, model=model, tokenizer=tokenizer)
    policy.name = name
    return policy
