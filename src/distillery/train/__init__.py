"""Training: one loop for every objective.

- `train.config.TrainConfig`: optimiser, schedule, batching, eval, checkpoints, logging;
  `OnPolicyConfig`: what the on-policy trainers' configs share.
- `train.data`: `Example` (input_ids, labels with -100 off-target, extras),
  `example_from_mask` / `examples_from_masks` (from `agents.prompts.episode_example_ids`),
  `example_from_prompt` (one step: prompt ids + action ids), `collate`, `batch_order`;
  `ExampleGroups` / `GroupBatch` for objectives over groups of examples (preference pairs).
- `train.loop.train(model, train_examples, eval_examples, cfg, out_dir, loss_fn=None, *,
  groups=None) -> TrainResult(metrics, steps, tokens_per_s, history, resumed_from)`;
  objectives are ``loss_fn(model, batch) -> (loss, stats)`` built on `train.loop.action_logits`.
- `train.losses`: every objective as a pure function over tensors.
- `train.card.build_card(...)`: the model directory's card.json.
- The trainers: `warmup`, `teacher`, and the on-policy `internalize`, `rl`, `selskill`,
  `distill`, each with a `*_report` module (what its stage measures beside the loop, its
  metrics record and its claims as `types.Claim`).

A warm-up (SFT from scratch) in full::

    from distillery.agents.prompts import PromptConfig, episode_example_ids
    from distillery.lm.model import ModelConfig, build_model, save_model_dir
    from distillery.lm.tokenizer import TokenizerConfig, token_stats, train_tokenizer
    from distillery.train.card import build_card
    from distillery.train.config import TrainConfig
    from distillery.train.data import examples_from_masks
    from distillery.train.loop import train

    tok = train_tokenizer(texts, TokenizerConfig())          # instructions, observations,
                                                             # actions, env vocabularies
    pairs = [episode_example_ids(instr, turns, tok, prompt) for instr, turns in episodes]
    examples = examples_from_masks(pairs)                    # None (too long) are skipped
    model = build_model(ModelConfig(), tok)
    result = train(model, examples[n_eval:], examples[:n_eval], TrainConfig(), "models/.warmup-run")
    card = build_card(prompt=prompt, seed=..., data_files=[...], metrics=result.metrics,
                      params=params["warmup"], model_cfg=..., train_cfg=..., model=model,
                      extra={"tokenizer": token_stats(tok, names).to_dict()})
    save_model_dir("models/warmup", model, tok, card)

The run directory (checkpoints, dvclive) must survive a rerun for resume after a kill: in
DVC keep it out of the stage's outs, or declare it ``persist: true``.

Submodules import torch; import them directly (this package imports nothing).
"""
