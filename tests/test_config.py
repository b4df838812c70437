import pytest

from distillery.config import (
    CollectConfig,
    ConfigError,
    TasksConfig,
    from_dict,
    load_policy,
    load_section,
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


def test_load_section_reads_params_file(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("tasks:\n  seed: 7\npolicies:\n  r: {kind: random, kwargs: {seed: 1}}\n")
    assert load_section(TasksConfig, "tasks", path=p).seed == 7
    assert load_policy("r", {"policies": {"r": {"kind": "random"}}}).kind == "random"
    with pytest.raises(ConfigError, match="policies.nope: not defined"):
        load_policy("nope", {"policies": {}})


def test_mine_max_groups_must_not_be_negative():
    from stages.mine import MineConfig

    assert load_section(MineConfig, "mine", params={"mine": {"max_groups": 0}}).max_groups == 0   # 0 = every group
    with pytest.raises(ConfigError, match=r"mine: max_groups must be 0 \(every group\) or positive, got -1"):
        load_section(MineConfig, "mine", params={"mine": {"max_groups": -1}})
