"""A plugin environment or family entry that is not what it claims is reported where it is
found or built, naming the entry point, its target and its package, and what is wrong, in a
line (not a page of repr, not an AttributeError from whatever first calls it)."""

from __future__ import annotations

import pytest
from tests.envs import faulty_plugin as F

from distillery import registry
from distillery.envs.base import env_spec, families, make_env


@pytest.mark.parametrize("name, missing", [("none_state_hash", "state_hash()"),
                                           ("missing_methods", "verify(), state_hash()")])
def test_an_environment_missing_a_protocol_method_is_refused_when_built(tmp_path, name, missing):
    with F.installed(tmp_path, envs=F.ENVS), pytest.raises(registry.RegistryError) as err:
        make_env(name)
    msg = str(err.value)
    assert msg.startswith(f"environment {name!r} ({F.MODULE}:{name.upper()} in package {F.DIST}) builds class ")
    assert f"which lacks {missing}: an environment implements every method of the Environment protocol" in msg


def test_an_envspec_named_unlike_its_entry_point_says_so_in_a_line(tmp_path):
    with F.installed(tmp_path, envs={"misnamed": f"{F.MODULE}:MISNAMED"}), \
            pytest.raises(registry.RegistryError) as err:
        env_spec("misnamed")
    assert str(err.value) == (
        f"distillery.envs entry point 'misnamed' ({F.MODULE}:MISNAMED in package {F.DIST}): its EnvSpec is "
        "named 'other'; the entry-point name and EnvSpec.name must match")


def test_an_env_entry_that_is_not_an_envspec_names_what_it_holds(tmp_path):
    with F.installed(tmp_path, envs={"a_class": f"{F.MODULE}:MissingMethods"}), \
            pytest.raises(registry.RegistryError) as err:
        env_spec("a_class")
    assert str(err.value) == (f"distillery.envs entry point 'a_class' ({F.MODULE}:MissingMethods in package "
                              f"{F.DIST}) holds class {F.MODULE}.MissingMethods, not an EnvSpec")


def test_a_family_entry_that_is_not_a_family_names_its_target_and_package(tmp_path):
    with F.installed(tmp_path, families={"bad": f"{F.MODULE}:returns_dict"}), \
            pytest.raises(registry.RegistryError) as err:
        families()
    assert str(err.value) == (
        f"distillery.families entry point 'bad' ({F.MODULE}:returns_dict in package {F.DIST}) holds function "
        f"{F.MODULE}.returns_dict, not a Family (an entry holds a Family, or a list or dict of them)")


def test_an_entry_that_fails_to_load_names_its_package(tmp_path):
    with F.installed(tmp_path, envs={"gone": f"{F.MODULE}:NOPE"}), pytest.raises(registry.RegistryError) as err:
        env_spec("gone")
    assert str(err.value).startswith(
        f"distillery.envs entry point 'gone' ({F.MODULE}:NOPE in package {F.DIST}) failed to load: AttributeError")
