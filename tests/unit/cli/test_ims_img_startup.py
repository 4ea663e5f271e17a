"""ims-img start-up stays light: a named convert imports only what it uses."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys

from ims import cmd
from ims.cmd import img


def _modules_after(code: str) -> set[str]:
    probe = f"{code}; import json, sys; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_a_named_copy_imports_no_heavy_modules(tmp_path):
    src = tmp_path / "disk.raw"
    src.write_bytes(b"data" * 4096)
    dst = tmp_path / "disk.qcow2"
    argv = ["convert", "-f", "raw", "-O", "qcow2", str(src), str(dst)]
    loaded = _modules_after(f"from ims.cmd import img; assert img.main({argv!r}) == 0")
    heavy = {"stevedore", "importlib.metadata", "dataclasses", "inspect", "zstandard", "logging"}
    assert not heavy & loaded
    assert not {m for m in loaded if m.startswith("ims.drivers.formats.")} - {
        "ims.drivers.formats._qemu",
        "ims.drivers.formats.base",
        "ims.drivers.formats.qcow2",
        "ims.drivers.formats.raw",
    }


def test_reuse_freed_memory_without_mallopt(monkeypatch):
    def no_libc(*args, **kwargs):
        raise OSError("no C library here")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    img._reuse_freed_memory()  # nothing to do, nothing raised


def test_reuse_freed_memory_calls_mallopt(monkeypatch):
    calls = []

    class Mallopt:
        def __call__(self, param, value):
            calls.append((param, value))
            return 1

    class Libc:
        mallopt = Mallopt()

    monkeypatch.setattr(ctypes, "CDLL", lambda name: Libc())
    img._reuse_freed_memory()
    assert dict(calls) == {cmd.M_MMAP_THRESHOLD: 32 << 20, cmd.M_TRIM_THRESHOLD: 256 << 20}


def test_json_output_still_works(tmp_path, capsys):
    src = tmp_path / "disk.raw"
    src.write_bytes(bytes(8192))
    assert img.main(["info", "-f", "raw", "--output", "json", str(src)]) == 0
    assert json.loads(capsys.readouterr().out)["virtual-size"] == 8192
