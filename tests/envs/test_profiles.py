"""Generated users: training users near the default habit, held-out users never seen."""

from __future__ import annotations

import pytest

from distillery.config import TasksConfig
from distillery.envs.stage.profiles import (
    PROFILES,
    VALUE_POOLS,
    generated_profile,
    get_profile,
    preference_values,
    vocabulary_text,
)


def _changed(name: str) -> int:
    d, p = PROFILES["default"], get_profile(name)
    return sum(a != b for a, b in zip(preference_values(d), preference_values(p), strict=True))


def test_generated_users_change_a_fixed_number_of_dimensions_deterministically():
    for i in range(1, 30):
        assert _changed(f"u{i:02d}") <= 3 and _changed(f"h{i:02d}") <= 4
        assert get_profile(f"u{i:02d}") == generated_profile(f"u{i:02d}")   # a pure function of the name
    # sign-off words may coincide with the default's "Best"; most users still differ on 3 / 4
    assert sum(_changed(f"u{i:02d}") == 3 for i in range(1, 30)) > 15


def test_held_out_users_have_combinations_no_training_user_has():
    train = {preference_values(get_profile(f"u{i:02d}")) for i in range(1, 100)}
    for name in ["h01", "h02", "h03", "alex", "jo"]:
        assert preference_values(get_profile(name)) not in train, name


def test_every_preference_value_is_in_the_vocabulary_text():
    text = vocabulary_text()
    for values in VALUE_POOLS.values():
        for v in values:
            assert (" ".join(v) if isinstance(v, tuple) else str(v)) in text


def test_unknown_profiles_and_overlapping_held_out_users_fail_clearly():
    with pytest.raises(ValueError, match="unknown profile 'zed'"):
        get_profile("zed")
    with pytest.raises(ValueError, match="generated profile names"):
        generated_profile("x01")
    with pytest.raises(ValueError, match="held-out user must be unseen"):
        TasksConfig(train_profiles=["default", "h01"], heldout_profiles=["h01"])
