"""The marker tokens that structure a compact prompt: each one token of the vocabulary
that no text produces. Tokenizers are trained with them (`lm.tokenizer`) and prompts are
rendered with them (`agents.prompts`), so they live below both."""

MARKERS: dict[str, str] = {
    "instruction": "<|instruction|>",
    "experience": "<|experience|>",
    "observation": "<|observation|>",
    "action": "<|action|>",
    "end": "<|end|>",
}
