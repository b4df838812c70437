import pytest
from tests.conftest import REPO

from distillery.config import (
    CollectConfig,
    ConfigError,
    ExecutorConfig,
    TasksConfig,
    from_dict,
    help_of,
    load_policy,
    load_section,
    read_params,
    resolve_section,
    to_dict,
)


def test_defaults_and_nested_sections():
    cfg = from_dict(CollectConfig, {"k": 4, "executor": {"kind": "thread", "workers": 3}})
    assert cfg.k == 4 and cfg.executor.kind == "thread" and cfg.executor.workers == 3
    assert CollectConfig().executor is not CollectConfig().executor  # no shared mutable default


def test_unknown_key_names_the_section_and_the_known_keys():
    with pytest.raises(ConfigError, match=r"tasks: unknown key\(s\) \['n_trian_per_family'\]"):
        from_dict(TasksConfig, {"n_trian_per_family": 3}, where="tasks")


@pytest.mark.parametrize("data, fragment", [
    ({"max_steps": "ten"}, "tasks.max_steps: expected an integer"),
    ({"families": "file_invoice"}, "tasks.families: expected a list"),
    ({"max_steps": 1}, "max_steps must be at least 2"),
])
def test_bad_values_say_what_to_change(data, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        from_dict(TasksConfig, data, where="tasks")


@pytest.mark.parametrize("data, fragment", [
    ({"batch_size": 0}, "batch_size must be at least 1"),
    ({"splits": ["tset"]}, "splits must name some of train, test"),
    ({"splits": []}, "splits must name some of"),
    ({"tasks_per_family": -1}, "tasks_per_family must be >= 0"),
])
def test_collect_refuses_what_would_hang_or_run_nothing(data, fragment):
    with pytest.raises(ConfigError, match=fragment):
        from_dict(CollectConfig, data, where="collect")


def test_load_section_reads_params_file(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("tasks:\n  seed: 7\npolicies:\n  r: {kind: random, kwargs: {seed: 1}}\n")
    assert load_section(TasksConfig, "tasks", path=p).seed == 7
    assert load_policy("r", {"policies": {"r": {"kind": "random"}}}).kind == "random"
    with pytest.raises(ConfigError, match="policies.nope: not defined"):
        load_policy("nope", {"policies": {}})


def test_mine_max_groups_must_not_be_negative():
    from distillery.mining.experience import MineConfig

    assert load_section(MineConfig, "mine", params={"mine": {"max_groups": 0}}).max_groups == 0   # 0 = every group
    with pytest.raises(ConfigError, match=r"mine: max_groups must be 0 \(every group\) or positive, got -1"):
        load_section(MineConfig, "mine", params={"mine": {"max_groups": -1}})


# ---------------------------------------------------------------------------------------
# `base:` sections
# ---------------------------------------------------------------------------------------


def test_a_section_with_a_base_is_the_base_with_its_own_keys_deep_merged_over_it():
    params = {"recipe": {"k": 2, "seed": 0, "executor": {"kind": "thread", "workers": 3}},
              "variant": {"base": "recipe", "seed": 7, "executor": {"workers": 1}},
              "variant2": {"base": "variant", "k": 5}}
    assert resolve_section(params, "variant") == {"k": 2, "seed": 7, "executor": {"kind": "thread", "workers": 1}}
    cfg = load_section(CollectConfig, "variant2", params)
    assert (cfg.k, cfg.seed, cfg.executor.kind, cfg.executor.workers) == (5, 7, "thread", 1)
    assert params["variant"] == {"base": "recipe", "seed": 7, "executor": {"workers": 1}}   # not modified
    assert resolve_section(params, "absent") is None and load_section(CollectConfig, "absent", params).k == 1


def test_an_unknown_or_circular_base_is_named():
    with pytest.raises(ConfigError, match=r"variant.base: 'recpie' is not a section of params.yaml; "
                                          r"sections: \['recipe', 'variant'\]"):
        load_section(CollectConfig, "variant", {"recipe": {}, "variant": {"base": "recpie"}})
    loop = {"a": {"base": "b"}, "b": {"base": "c"}, "c": {"base": "a", "k": 2}}
    with pytest.raises(ConfigError, match=r"a: circular base \(a -> b -> c -> a\)"):
        load_section(CollectConfig, "a", loop)
    with pytest.raises(ConfigError, match=r"a: circular base \(a -> a\)"):
        load_section(CollectConfig, "a", {"a": {"base": "a"}})


def test_student_weak_is_the_warmup_recipe_stopped_early():
    """params.yaml's student_weak holds only what differs from warmup."""
    from distillery.train.warmup import WarmupConfig

    params = read_params(REPO / "params.yaml")
    weak, warm = (to_dict(load_section(WarmupConfig, s, params)) for s in ("student_weak", "warmup"))
    assert weak["train"].pop("max_steps") < warm["train"].pop("max_steps")
    assert weak == warm


# ---------------------------------------------------------------------------------------
# Choices
# ---------------------------------------------------------------------------------------


def test_a_choice_outside_its_literal_is_rejected_from_params_and_from_code():
    with pytest.raises(ConfigError, match=r"collect.executor.kind: 'pool' is not one of \['process', 'thread', "
                                          r"'inline'\]"):
        load_section(CollectConfig, "collect", {"collect": {"executor": {"kind": "pool"}}})
    with pytest.raises(ValueError, match=r"executor.kind must be one of \['process', 'thread', 'inline'\], "
                                         r"not 'pool'"):
        ExecutorConfig(kind="pool")


def test_collect_runs_the_first_tasks_per_family():
    assert load_section(CollectConfig, "play", {"play": {"tasks_per_family": 3}}).tasks_per_family == 3
    with pytest.raises(ConfigError, match="unknown key"):
        load_section(CollectConfig, "play", {"play": {"max_tasks_per_family": 3}})


def test_the_on_policy_trainers_share_their_loop_fields_and_check_their_choices():
    from distillery.train.config import OnPolicyConfig
    from distillery.train.distill import DistillConfig
    from distillery.train.internalize import InternalizeConfig
    from distillery.train.rl import RLConfig
    from distillery.train.selskill import SelSkillConfig

    shared = {"learn_split", "test_split", "tasks_per_family", "k", "temperature", "max_new_tokens", "batch_size",
              "seed"}
    for cls, section, choice in ((InternalizeConfig, "internalize", "regime"), (RLConfig, "rl", "method"),
                                 (SelSkillConfig, "selskill", None), (DistillConfig, "distill", "start")):
        assert issubclass(cls, OnPolicyConfig) and shared <= set(help_of(cls)), cls
        with pytest.raises(ConfigError, match=rf"{section}: {section}.temperature must be > 0"):
            load_section(cls, section, {section: {"temperature": 0.0}})
        if choice:
            with pytest.raises(ConfigError, match=rf"{section}.{choice}: 'nope' is not one of"):
                load_section(cls, section, {section: {choice: "nope"}})
            with pytest.raises(ValueError, match=rf"{section}.{choice} must be one of"):
                cls(**{choice: "nope"})
    assert load_section(InternalizeConfig, "internalize", {"internalize": {"tasks_per_family": 0}}).tasks_per_family == 0
