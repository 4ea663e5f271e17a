"""Console scripts."""

from __future__ import annotations

import ctypes

#: glibc mallopt() parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def mallopt(param: int, value: int) -> bool:
    """Set a glibc malloc parameter; False where the C library has no mallopt."""
    try:
        func = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    func.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(func(param, value))


def single_malloc_arena() -> bool:
    """Make glibc's malloc use one arena in this process and the ones it forks.

    PERF(ims): image data moves between threads (the request's, the hashing
    threads, a store's part and range threads) and glibc gives threads that
    meet in malloc arenas of their own, each keeping part of what it frees:
    a few 1 GiB transfers left an API worker 100-190 MiB above its live
    data. With one arena the RSS follows what is live, at no measurable CPU
    cost (buffers are large and few). Call it before any thread starts.
    """
    return mallopt(M_ARENA_MAX, 1)
