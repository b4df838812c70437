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


# ---------------------------------------------------------------------------------------
# params.yaml itself: YAML errors, duplicate keys, non-mapping sections, the policies table
# ---------------------------------------------------------------------------------------


def test_a_yaml_syntax_error_names_the_file_line_and_column(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("tasks:\n  seed: 0\n max_steps: 3\n")
    with pytest.raises(ConfigError, match=rf"^{p}: not valid YAML: line 3, column 2: expected <block end>"):
        read_params(p)


def test_a_key_given_twice_is_refused_with_its_line(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("tasks:\n  seed: 0\n  seed: 1\n")
    with pytest.raises(ConfigError, match=rf"^{p}: not valid YAML: line 3, column 3: duplicate key 'seed' "
                                          r"\(first given on line 2"):
        read_params(p)
    p.write_text("tasks: {seed: 0}\nrl: {k: 2}\ntasks: {seed: 1}\n")
    with pytest.raises(ConfigError, match=r"line 3, column 1: duplicate key 'tasks' \(first given on line 1"):
        read_params(p)
    # The same key in two different mappings is no duplicate.
    p.write_text("tasks: {seed: 0}\nrl: {seed: 1}\n")
    assert read_params(p) == {"tasks": {"seed": 0}, "rl": {"seed": 1}}


def test_a_missing_params_file_says_where_to_run_from(tmp_path):
    with pytest.raises(ConfigError, match=r"not found; run from the repository root$"):
        read_params(tmp_path / "params.yaml")


def test_the_repository_params_yaml_has_no_duplicate_key_and_reads_as_plain_yaml():
    import yaml

    text = (REPO / "params.yaml").read_text()
    assert read_params(REPO / "params.yaml") == yaml.safe_load(text)


@pytest.mark.parametrize("body", [[], [1, 2], 0, "", "seed: 1", False])
def test_a_section_that_is_not_a_mapping_is_refused_with_its_key_path(body):
    with pytest.raises(ConfigError, match=r"^tasks: expected a mapping of keys, got "):
        from_dict(TasksConfig, body, where="tasks")
    assert from_dict(TasksConfig, None, where="tasks") == TasksConfig()     # None: every default


@pytest.mark.parametrize("table, fragment", [
    (["oracle"], r"^policies: expected a mapping of policy name -> \{kind: \.\.\., kwargs: \{\.\.\.\}\}, got list"),
    ({"oracle": "oracle"}, r"^policies.oracle: expected a mapping such as \{kind: oracle, kwargs: \{\.\.\.\}\}, "
                           r"got str 'oracle'"),
    ({"oracle": None}, r"^policies.oracle: expected a mapping .*, got NoneType None"),
    ({"oracle": {"kwargs": {"seed": 0}}}, r"^policies.oracle.kind: missing; say which policy it is, one of "
                                          r"\['oracle', 'random', 'hf', 'openai'\]"),
])
def test_the_policies_table_needs_a_mapping_with_a_kind_per_entry(table, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_policy("oracle", {"policies": table})


def test_an_absent_or_empty_policies_table_defines_nothing():
    for params in ({}, {"policies": None}):
        with pytest.raises(ConfigError, match=r"policies.oracle: not defined in params.yaml; defined: \[\]"):
            load_policy("oracle", params)


# ---------------------------------------------------------------------------------------
# Ranges and names checked at load
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("data, fragment", [
    ({"policies": {"min_confidence": -1}}, r"pghs.policies: pghs.policies.min_confidence must be in \[0, 1\]"),
    ({"policies": {"min_confidence": 1.5}}, r"pghs.policies: pghs.policies.min_confidence must be in \[0, 1\]"),
    ({"fit": {"learning_rate": -1}}, r"pghs.fit: pghs.fit.learning_rate must be > 0, got -1.0"),
    ({"fit": {"learning_rate": 0}}, r"pghs.fit: pghs.fit.learning_rate must be > 0"),
    ({"fit": {"n_estimators": 0}}, r"pghs.fit: pghs.fit.n_estimators must be at least 1, got 0"),
    ({"fit": {"num_leaves": 1}}, r"pghs.fit: pghs.fit.num_leaves must be at least 2"),
    ({"fit": {"feature_fraction": 0}}, r"pghs.fit: pghs.fit.feature_fraction must be in \(0, 1\]"),
    ({"fit": {"lambda_l2": -1}}, r"pghs.fit: pghs.fit.min_child_samples and pghs.fit.lambda_l2 must be >= 0"),
])
def test_pghs_refuses_out_of_range_fit_and_mining_settings(data, fragment):
    from distillery.config import PghsConfig

    with pytest.raises(ConfigError, match=fragment):
        load_section(PghsConfig, "pghs", {"pghs": data})


@pytest.mark.parametrize("cls_path, section, data, fragment", [
    ("distillery.train.rl:RLConfig", "rl", {"learn_split": "trian"},
     r"rl: rl.learn_split: 'trian' is not a task split; choose from \['train', 'test', 'heldout_train', "
     r"'heldout_test'\]"),
    ("distillery.train.rl:RLConfig", "rl", {"test_split": "tset"}, r"rl.test_split: 'tset' is not a task split"),
    ("distillery.train.internalize:InternalizeConfig", "internalize", {"learn_split": "trian"},
     r"internalize: internalize.learn_split: 'trian' is not a task split"),
    ("distillery.train.internalize:InternalizeConfig", "twx_internalize", {"eval_seeds": []},
     r"twx_internalize: internalize.eval_seeds must list at least one seed"),
    ("distillery.train.rl:RLConfig", "rl", {"gamma": 1.5}, r"rl: rl.gamma must be in \[0, 1\] \(a discount\), got 1.5"),
    ("distillery.train.rl:RLConfig", "rl", {"gamma": -0.1}, r"rl.gamma must be in \[0, 1\]"),
    ("distillery.train.rl:RLConfig", "rl", {"clip_low": 1.0}, r"rl: rl.clip_low must be in \[0, 1\) and "
                                                               r"rl.clip_high >= 0"),
    ("distillery.train.rl:RLConfig", "rl", {"clip_high": -0.1}, r"rl.clip_low must be in \[0, 1\) and rl.clip_high >= 0"),
    ("distillery.train.rl:RLConfig", "rl", {"kl_coef": -1}, r"rl: rl.kl_coef must be >= 0"),
    ("distillery.train.selskill:SelSkillConfig", "selskill", {"lr": -1}, r"selskill: selskill.lr must be > 0, got -1.0"),
    ("distillery.train.selskill:SelSkillConfig", "selskill", {"sft_weight": -1}, r"selskill: selskill.sft_weight must be >= 0"),
    ("distillery.mining.experience:MineConfig", "mine", {"split": "trian"},
     r"mine: split 'trian' is not a task split; choose from \['train', 'test'"),
    ("distillery.mining.experience:MineConfig", "mine", {"temperature": -1}, r"mine: temperature must be >= 0 \(0 = greedy\)"),
])
def test_trainers_refuse_unknown_splits_empty_seeds_and_out_of_range_values(cls_path, section, data, fragment):
    import importlib

    module, name = cls_path.split(":")
    cls = getattr(importlib.import_module(module), name)
    with pytest.raises(ConfigError, match=fragment):
        load_section(cls, section, {section: data})


def test_the_ranges_keep_what_the_algorithms_allow():
    """An asymmetric clip either way, gamma at its ends, greedy skill validation: all legitimate."""
    from distillery.mining.experience import MineConfig
    from distillery.train.rl import RLConfig

    assert load_section(RLConfig, "rl", {"rl": {"clip_low": 0.5, "clip_high": 0.1, "gamma": 1.0}}).clip_low == 0.5
    assert load_section(RLConfig, "rl", {"rl": {"gamma": 0.0, "learn_split": "train", "test_split": "test"}}).gamma == 0.0
    assert load_section(MineConfig, "mine", {"mine": {"temperature": 0.0, "split": "train"}}).temperature == 0.0


# ---------------------------------------------------------------------------------------
# The repository's own params.yaml: every section loads, and holds what the file says
# ---------------------------------------------------------------------------------------

# Sections of params.yaml that no config class reads whole: `policies` (one entry at a time,
# load_policy) and `twx_internalize_seeds` (a dvc.yaml foreach list).
NOT_A_CONFIG = {"policies", "twx_internalize_seeds"}


def _section_classes() -> dict[str, type]:
    from stages.sql_scale import SqlScaleConfig

    from distillery.config import EvaluateConfig, PghsConfig, PghsDataConfig
    from distillery.envs.sql.config import SqlRealConfig, SqlTasksConfig
    from distillery.evaluate.environments import EnvTableConfig
    from distillery.mining.experience import MineConfig
    from distillery.train.distill import DistillConfig
    from distillery.train.internalize import InternalizeConfig
    from distillery.train.rl import RLConfig
    from distillery.train.selskill import SelSkillConfig
    from distillery.train.sql_eval import SqlCollectConfig, SqlEvaluateConfig
    from distillery.train.sql_rl import SqlRLConfig, SqlTrackConfig
    from distillery.train.teacher import TeacherConfig
    from distillery.train.warmup import WarmupConfig
    from distillery.vision.config import SceneConfig, VisionEvalConfig, VisionTrainConfig
    from distillery.vision.table_rl import TableRLConfig, TableTrainConfig
    from distillery.vision.tables import TableDataConfig

    return {
        "tasks": TasksConfig, "twx_tasks": TasksConfig,
        **dict.fromkeys(("collect", "play", "rollout", "twx_collect", "twx_play", "twx_rollout"), CollectConfig),
        **dict.fromkeys(("warmup", "student_weak", "twx_warmup", "sql_warmup"), WarmupConfig),
        "teacher": TeacherConfig, "evaluate": EvaluateConfig, "mine": MineConfig, "twx_mine": MineConfig,
        "internalize": InternalizeConfig, "twx_internalize": InternalizeConfig, "rl": RLConfig, "twx_rl": RLConfig,
        "selskill": SelSkillConfig, "distill": DistillConfig,
        "sql_tasks": SqlTasksConfig, "sql_real": SqlRealConfig, "sql_track": SqlTrackConfig,
        "sql_collect": SqlCollectConfig, "sql_warmup": WarmupConfig, "sql_rl": SqlRLConfig,
        "sql_scale": SqlScaleConfig, "sql_evaluate": SqlEvaluateConfig,
        "pghs_data": PghsDataConfig, "pghs": PghsConfig,
        "vision_data": SceneConfig, "vision_train": VisionTrainConfig, "vision_eval": VisionEvalConfig,
        "table_data": TableDataConfig, "table_train": TableTrainConfig, "table_rl": TableRLConfig,
        "env_table": EnvTableConfig,
    }


def _holds(loaded, given, where):
    """Every value `given` (a resolved params section) is in `loaded` (the config as a dict)."""
    if isinstance(given, dict):
        assert isinstance(loaded, dict), where
        for k, v in given.items():
            _holds(loaded[k], v, f"{where}.{k}")
    else:
        assert loaded == given and (isinstance(given, bool) == isinstance(loaded, bool)), (where, loaded, given)


def _merged(base, over):
    out = dict(base)
    for k, v in over.items():
        out[k] = _merged(base.get(k, {}), v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


@pytest.mark.parametrize("micro", [None, "tests/pghs/micro_params.yaml", "tests/vision/micro_params.yaml"])
def test_every_section_of_the_repository_params_loads_and_holds_what_the_file_says(micro):
    import yaml

    params = read_params(REPO / "params.yaml")
    if micro:
        params = _merged(params, yaml.safe_load((REPO / micro).read_text()))
    classes = _section_classes()
    unread = sorted(set(params) - set(classes) - NOT_A_CONFIG)
    assert not unread, f"params.yaml sections with no config class in this test: {unread}; add them"
    for section, cls in classes.items():
        cfg = load_section(cls, section, params)
        _holds(to_dict(cfg), resolve_section(params, section) or {}, section)
    for name, entry in params["policies"].items():
        policy = load_policy(name, params)
        assert (policy.kind, policy.kwargs) == (entry["kind"], entry.get("kwargs", {})), name
