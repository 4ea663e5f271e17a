"""ims-api and ims-worker keep malloc to one arena (glibc) so freed image buffers are reused."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from ims.cmd import single_malloc_arena


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_single_malloc_arena_on_glibc() -> None:
    # A fresh interpreter: the setting is process-wide.
    code = "from ims.cmd import single_malloc_arena; print(single_malloc_arena())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_single_malloc_arena_never_raises() -> None:
    assert single_malloc_arena() in (True, False)
