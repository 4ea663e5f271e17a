"""registry.load: one named plugin without scanning every distribution."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

import pytest

from ims import errors
from ims.disk import registry


def test_builtin_table_matches_the_entry_points():
    declared = {
        ep.name: ep.value for ep in importlib.metadata.entry_points(group=registry.NAMESPACE)
    }
    if not declared:
        pytest.skip("ims is not installed with its entry points")
    shipped = {name: declared[name] for name in registry.BUILTIN if name in declared}
    assert shipped == registry.BUILTIN


@pytest.mark.parametrize("name", sorted(registry.BUILTIN))
def test_load_builtin(name):
    fmt = registry.load(name)
    assert fmt.name == name


def test_load_unknown_is_invalid():
    with pytest.raises(errors.Invalid, match="Unknown disk format 'nosuchformat'"):
        registry.load("nosuchformat")


def test_load_other_names_go_through_the_entry_points(monkeypatch):
    seen = []
    monkeypatch.setattr(registry, "_load_entry_point", lambda name: seen.append(name) or "x")
    assert registry.load("thirdparty") == "x"
    assert seen == ["thirdparty"]


def test_load_does_not_import_stevedore_or_other_plugins():
    code = (
        "import json, sys; from ims.disk import registry; registry.load('qcow2'); "
        "print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(done.stdout)
    assert not [m for m in loaded if m.startswith("stevedore")]
    assert "ims.drivers.formats.vmdk" not in loaded
