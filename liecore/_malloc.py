"""glibc allocator settings for CPU evaluation (opt-in; the ``lee`` workers apply them).

PyTorch's CPU tensors come from ``malloc``. glibc hands every freed block above a dynamic
threshold back to the operating system (and trims the heap top above 128 KiB), so a pass
that allocates the same activations again page-faults all of their memory in anew. A Lie
derivative allocates one primal and ``G`` tangents per layer, so it pays this more than a
plain forward pass does (``benchmarks/bench_liecore.py`` prints both allocators).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

__all__ = ["tune_malloc"]

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = {"mmap_threshold": 32 << 20, "trim_threshold": 1 << 30, "top_pad": 64 << 20}
"""Blocks up to 32 MiB (glibc's largest threshold) come from the heap and are reused; up to
1 GiB of free heap top is kept; the heap grows 64 MiB at a time."""


def tune_malloc() -> dict[str, int] | None:
    """Make glibc keep and reuse freed tensor memory in this process (see the module docstring).

    Process-wide and permanent: the process holds on to its peak heap (up to 1 GiB of it free).
    Returns the settings applied, or None where the C library is not glibc (nothing changes).
    The same as starting the process with ``MALLOC_MMAP_THRESHOLD_=33554432
    MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_TOP_PAD_=67108864``.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    ok = all(
        libc.mallopt(param, value)
        for param, value in (
            (_M_MMAP_THRESHOLD, SETTINGS["mmap_threshold"]),
            (_M_TRIM_THRESHOLD, SETTINGS["trim_threshold"]),
            (_M_TOP_PAD, SETTINGS["top_pad"]),
        )
    )
    return dict(SETTINGS) if ok else None
