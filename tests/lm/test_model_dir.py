"""Model building, saving and loading: the directory round-trips to identical logits."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from distillery.lm.markers import MARKERS
from distillery.lm.model import (
    ModelConfig,
    ModelLoadError,
    build_model,
    load_model_dir,
    n_params,
    save_model_dir,
)
from distillery.lm.tokenizer import TokenizerConfig, train_tokenizer

TINY = dict(hidden_size=32, n_layers=2, n_heads=4, n_kv_heads=2, intermediate_size=64,
            max_position_embeddings=128)
TEXT = 'send_mail(to="ann.lee@acme.com", subject="Budget", body="See you.")'


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer([TEXT, "downloads/\n  invoice_acme.pdf\n  notes.txt"] * 3,
                           TokenizerConfig(vocab_size=512))


def ids_of(tok, text: str = TEXT) -> torch.Tensor:
    return torch.tensor([tok.encode(MARKERS["action"] + text, add_special_tokens=False)])


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(ids).logits


def test_from_scratch_follows_the_tokenizer(tok):
    model = build_model(ModelConfig(**TINY), tok)
    assert model.config.vocab_size == len(tok)
    assert model.config.eos_token_id == tok.eos_token_id
    assert model.config.pad_token_id == tok.pad_token_id
    assert model.config.tie_word_embeddings


def test_default_size_is_a_few_million_parameters(tok):
    from transformers import LlamaConfig

    cfg = ModelConfig()
    # Counted from the config alone (no weights built): embeddings (tied) + blocks + norm.
    c = LlamaConfig(vocab_size=4096, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                    num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                    num_key_value_heads=cfg.n_kv_heads)
    h, kv = c.hidden_size, c.hidden_size // c.num_attention_heads * c.num_key_value_heads
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * c.intermediate_size + 2 * h
    total = c.vocab_size * h + c.num_hidden_layers * per_layer + h
    assert 2e6 < total < 8e6


def test_init_is_seeded_and_leaves_the_global_rng_alone(tok):
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = build_model(ModelConfig(**TINY, init_seed=1), tok)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = build_model(ModelConfig(**TINY, init_seed=1), tok)
    c = build_model(ModelConfig(**TINY, init_seed=2), tok)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)


def test_save_load_round_trip_gives_identical_logits(tok, tmp_path):
    model = build_model(ModelConfig(**TINY), tok)
    card = {"prompt": {"style": "compact", "max_prompt_tokens": 64}, "seed": 3}
    out = save_model_dir(tmp_path / "m", model, tok, card)
    assert {"model.safetensors", "config.json", "card.json", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    loaded, tok2, card2 = load_model_dir(out)
    assert card2 == card
    assert not loaded.training
    assert torch.equal(logits(model, ids_of(tok)), logits(loaded, ids_of(tok2)))
    assert tok2.convert_tokens_to_ids(MARKERS["end"]) == tok.convert_tokens_to_ids(MARKERS["end"])
    # Nothing is left beside the directory (temporary or old copies).
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_saving_over_an_existing_directory_replaces_it(tok, tmp_path):
    a = build_model(ModelConfig(**TINY, init_seed=1), tok)
    b = build_model(ModelConfig(**TINY, init_seed=2), tok)
    save_model_dir(tmp_path / "m", a, tok, {"v": 1})
    save_model_dir(tmp_path / "m", b, tok, {"v": 2})
    loaded, _, card = load_model_dir(tmp_path / "m")
    assert card == {"v": 2}
    assert torch.equal(logits(loaded, ids_of(tok)), logits(b, ids_of(tok)))
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_a_plain_checkpoint_loads_with_an_empty_card_and_as_name_or_path(tok, tmp_path):
    model = build_model(ModelConfig(**TINY), tok)
    model.save_pretrained(tmp_path / "hf")
    tok.save_pretrained(tmp_path / "hf")
    _, _, card = load_model_dir(tmp_path / "hf")
    assert card == {}
    again = build_model(ModelConfig(name_or_path=str(tmp_path / "hf")), tok)
    assert torch.equal(logits(again, ids_of(tok)), logits(model, ids_of(tok)))


def test_lora_saves_merged_weights(tok, tmp_path):
    model = build_model(ModelConfig(**TINY, lora_r=4, lora_alpha=8), tok)
    assert 0 < n_params(model, trainable_only=True) < n_params(model) / 5
    with torch.no_grad():              # adapters start at zero: move them so merging matters
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    save_model_dir(tmp_path / "m", model, tok, {"lora_r": 4})
    loaded, _, _ = load_model_dir(tmp_path / "m")
    assert type(loaded).__name__ == "LlamaForCausalLM"
    torch.testing.assert_close(logits(loaded, ids_of(tok)), logits(model, ids_of(tok)), atol=1e-5, rtol=1e-5)
    assert type(model).__name__.startswith("Peft"), "saving must not unwrap the training model"


def test_errors_name_what_to_change(tok, tmp_path):
    with pytest.raises(ValueError, match="divisible by model.n_heads"):
        ModelConfig(hidden_size=30, n_heads=4)
    with pytest.raises(ValueError, match="dtype"):
        ModelConfig(dtype="fp8")
    with pytest.raises(ValueError, match="(?s)name_or_path='no/such-model'.*local checkpoint"):
        build_model(ModelConfig(name_or_path="no/such-model"), tok)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model_dir(tmp_path)
    save_model_dir(tmp_path / "m", build_model(ModelConfig(**TINY), tok), tok, {})
    (tmp_path / "m" / "card.json").write_text("{not json")
    with pytest.raises(ValueError, match="card.json: not valid JSON"):
        load_model_dir(tmp_path / "m")


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


def _set_config(**changes: object) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        config = json.loads(path.read_text())
        path.write_text(json.dumps(config | changes))
    return damage


def _double_width(path: Path) -> None:
    config = json.loads(path.read_text())
    path.write_text(json.dumps(config | {"hidden_size": 2 * config["hidden_size"]}))


DAMAGES = {     # file in the directory, what is done to it, what the error names
    "a config field of the wrong type": ("config.json", _set_config(hidden_size="wide"), "the config (config.json)"),
    "an architecture transformers lacks": ("config.json", _set_config(model_type="no_such_arch"),
                                           "the config (config.json)"),
    "a config whose shapes the weights do not have": ("config.json", _double_width, "the weights"),
    "truncated weights": ("model.safetensors", _truncate, "the weights"),
    "no weights": ("model.safetensors", Path.unlink, "the weights"),
    "a tokenizer file that is not JSON": ("tokenizer.json", lambda p: p.write_text("garbage"), "the tokenizer"),
    "a tokenizer file of another shape": ("tokenizer.json", lambda p: p.write_text("{}"), "the tokenizer"),
    "a card that is a list": ("card.json", lambda p: p.write_text("[1, 2]"), "card.json: expected a JSON object"),
    "a card that is not UTF-8": ("card.json", lambda p: p.write_bytes(b"\xff\xfe{"), "card.json: not UTF-8"),
    "a card with a number too long to convert": ("card.json", lambda p: p.write_text('{"a": ' + "9" * 5000 + "}"),
                                                 "card.json: not valid JSON"),
}


@pytest.fixture(scope="module")
def saved_dir(tok, tmp_path_factory) -> Path:
    return save_model_dir(tmp_path_factory.mktemp("saved") / "m", build_model(ModelConfig(**TINY), tok), tok,
                          {"prompt": {"style": "compact"}})


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_model_directory_is_one_error_naming_the_directory_and_the_part(saved_dir, tmp_path, damage):
    """Whatever transformers, safetensors or tokenizers raise over a damaged directory (their
    own exception kinds, not ValueError or OSError), loading it is a ModelLoadError, which
    the commands report in one line."""
    name, spoil, says = DAMAGES[damage]
    model_dir = shutil.copytree(saved_dir, tmp_path / "m")
    assert load_model_dir(model_dir).card == {"prompt": {"style": "compact"}}
    spoil(model_dir / name)
    with pytest.raises(ModelLoadError) as e:
        load_model_dir(model_dir)
    assert str(model_dir) in str(e.value) and says in str(e.value) and "\n" not in str(e.value)


def test_deepen_keeps_the_function_and_round_trips(tmp_path):
    """Identity blocks: the grown model's logits equal the original's; it saves and loads
    with its new depth, and the new blocks learn (their gradients are not all zero)."""
    import torch

    from distillery.lm.model import ModelConfig, build_model, deepen, load_model_dir, save_model_dir
    from distillery.lm.tokenizer import TokenizerConfig, train_tokenizer

    tok = train_tokenizer(["move the file to the folder", "send the mail to alex"], TokenizerConfig(vocab_size=300))
    model = build_model(ModelConfig(hidden_size=32, n_layers=2, n_heads=2, n_kv_heads=1, intermediate_size=64,
                                    max_position_embeddings=64), tok)
    ids = torch.tensor([tok("move the file to alex")["input_ids"]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
    deepen(model, 4)
    with torch.no_grad():
        after = model(input_ids=ids).logits
    assert len(model.model.layers) == 4 and model.config.num_hidden_layers == 4
    assert torch.equal(before, after)
    model(input_ids=ids, labels=ids).loss.backward()
    assert model.model.layers[3].self_attn.o_proj.weight.grad.abs().sum() > 0
    save_model_dir(tmp_path / "m", model, tok, {})
    again = load_model_dir(tmp_path / "m").model
    assert again.config.num_hidden_layers == 4
    with torch.no_grad():
        assert torch.allclose(again(input_ids=ids).logits, after)
    import pytest
    with pytest.raises(ValueError, match="layers already"):
        deepen(model, 3)


def test_the_prompt_a_card_records_is_read_once_for_every_stage(saved_dir, tmp_path):
    """`card_prompt` (what a model trained from a directory is prompted with) reads the card
    as `load_model_dir` does: no card is the default prompt; a damaged one is named."""
    from distillery.agents.prompts import PromptConfig
    from distillery.train.card import card_prompt
    from distillery.train.internalize import model_prompt

    assert card_prompt(saved_dir) == {"style": "compact"}
    assert model_prompt(saved_dir) == PromptConfig(style="compact")
    bare = shutil.copytree(saved_dir, tmp_path / "bare")
    (bare / "card.json").unlink()
    assert card_prompt(bare) == {} and model_prompt(bare) == PromptConfig()
    (bare / "card.json").write_text('{"prompt": "compact"}')
    with pytest.raises(ModelLoadError, match="card.json: prompt must be an object"):
        card_prompt(bare)
    (bare / "card.json").write_bytes(b"\xff")
    with pytest.raises(ModelLoadError, match="card.json: not UTF-8"):
        model_prompt(bare)
