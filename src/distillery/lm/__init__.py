"""Language models: the tokenizer, the model, batched generation.

- `lm.tokenizer`: `train_tokenizer(texts, TokenizerConfig) -> PreTrainedTokenizerFast`
  (environment names as whole tokens), `token_stats`, `ensure_markers`.
- `lm.model`: `ModelConfig`, `build_model(cfg, tokenizer)`, `save_model_dir(path, model,
  tokenizer, card)`, `load_model_dir(path) -> LoadedModel(model, tokenizer, card)`.
- `lm.generate`: `generate(model, prompts, stop_ids=..., pad_id=..., sampling=...)`.
- `lm.llama_forward`: `fast_forward(model)`, the lean forward pass `generate` runs Llama
  models with (bit-identical to transformers' own, less Python per call).
- `lm.target_forward`: `decoder_at_targets(model, input_ids, rows, cols)`, the decoder's
  output at selected positions with its last layer run only there (training on action tokens).

Submodules import torch/transformers; import them directly (this package imports nothing).
"""
