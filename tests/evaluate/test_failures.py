import pytest

from distillery.evaluate.failures import classify_failure, is_repetition_loop


def _kw(**over):
    base = dict(success=False, failed_check_types=["file_exists"], actions=["a()", "b()", "finish()"],
                valid=[True, True, True], mutating=[False, True, False], finished=True, n_ref_mutations=1)
    base.update(over)
    return base


@pytest.mark.parametrize("over, expected", [
    (dict(success=True, failed_check_types=[]), "none"),
    (dict(errored=True), "error"),
    (dict(actions=["a()", "a()", "a()"]), "repetition_loop"),
    (dict(valid=[False, False, True]), "invalid_call"),
    (dict(failed_check_types=["unchanged_except", "file_exists"]), "collateral_damage"),
    (dict(finished=False, mutating=[False, False, False]), "step_limit"),
    (dict(finished=False, n_ref_mutations=3), "incomplete"),
    (dict(finished=False), "wrong_target"),
    (dict(mutating=[False, False, False]), "premature_finish"),
    (dict(), "wrong_target"),
])
def test_each_failure_pattern(over, expected):
    assert classify_failure(**_kw(**over)) == expected


def test_repetition_counts_non_consecutive_repeats():
    assert is_repetition_loop(["a", "b", "a", "c", "a", "d", "a"])
    assert not is_repetition_loop(["a", "b", "a", "b", "a"])
