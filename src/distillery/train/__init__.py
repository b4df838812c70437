"""Training: one loop for every objective.

- `train.config.TrainConfig`: optimiser, schedule, batching, eval, checkpoints, logging.
- `train.data`: `Example` (input_ids, labels with -100 off-target, extras),
  `example_from_mask` / `examples_from_masks` (from `agents.prompts.episode_example_ids`),
  `collate`, `batch_order` (length-bucketed, deterministic).
- `train.loop.train(model, train_examples, eval_examples, cfg, out_dir, loss_fn=None)
  -> TrainResult(metrics, steps, tokens_per_s, history, resumed_from)`; objectives are
  ``loss_fn(model, batch) -> (loss, stats)`` built on `train.loop.action_logits`.
- `train.losses`: every objective as a pure function over tensors.
- `train.card.build_card(...)`: the model directory's card.json.

Submodules import torch; import them directly (this package imports nothing).
"""
