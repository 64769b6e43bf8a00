"""LightGBM's thread count is one number for the whole process, so concurrent calls must agree on it.

LightGBM 4 keeps the `num_threads` of its latest call in a process-global variable and reads it
again inside a call, e.g. to size per-thread buffers and then to open the parallel loop that fills
them. Two Python threads calling LightGBM with different `num_threads` (a default-thread predict
beside a one-thread Dataset construction) can therefore index past a buffer and crash the process.
A cap (`LGBM_SetMaxThreads`) bounds what every call resolves to, so under a cap of `n` calls that
ask for 0 (LightGBM's default) or at least `n` threads all run on exactly `n`.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager


def cap_threads(n: int) -> int:
    """Cap every later LightGBM call in this process at `n` threads (-1 or 0: no cap).

    Args:
        n: the cap.

    Returns:
        The cap before this call (-1: none), for restoring it.
    """
    from lightgbm.basic import _LIB, _safe_call

    prev = ctypes.c_int(-1)
    _safe_call(_LIB.LGBM_GetMaxThreads(ctypes.byref(prev)))
    _safe_call(_LIB.LGBM_SetMaxThreads(ctypes.c_int(n if n > 0 else -1)))
    return prev.value


@contextmanager
def capped_threads(n: int) -> Iterator[None]:
    """LightGBM capped at `n` threads inside the block, the earlier cap restored after it."""
    prev = cap_threads(n)
    try:
        yield
    finally:
        cap_threads(prev)
