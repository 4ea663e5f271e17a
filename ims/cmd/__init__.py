"""Console scripts."""

from __future__ import annotations

import ctypes

#: glibc's mallopt() parameter for the most arenas malloc may create.
_M_ARENA_MAX = -8


def single_malloc_arena() -> bool:
    """Make glibc's malloc use one arena in this process and the ones it forks.

    PERF(ims): image data moves between threads (the request's, the hashing
    pool's, a store's part and range threads) and glibc gives threads that
    meet in malloc arenas of their own, each keeping part of what it frees:
    a few 1 GiB transfers left an API worker 100-190 MiB above its live
    data. With one arena the RSS follows what is live, at no measurable CPU
    cost (buffers are large and few). Returns False where there is no
    mallopt (not glibc); call it before any thread starts.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_ARENA_MAX, 1))
