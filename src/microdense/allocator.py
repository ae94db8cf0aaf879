"""Keep freed memory in the process, so a training step reuses pages it already touched.

A CPU training step frees and re-allocates the same activation-sized blocks (tens of MB at batch 128) every step.
glibc hands every block above its mmap threshold (at most 32 MB by default) straight back to the kernel when it is
freed, so the next step's tensor of the same size is faulted in again, one zeroed 4 KB page at a time. On the
project's 2-core EPYC a write into such fresh memory ran at a fifth of the speed of a write into memory already
mapped, and a Micro-Dense Net, whose concatenations are its largest tensors, lost a third of its step to it
(docs/performance.md, "Allocator"). Raising the thresholds keeps freed blocks in the heap for reuse, as CUDA's
caching allocator keeps GPU memory: the process's resident size stays at its peak instead of rising and falling.

This changes the whole process, so only the command line calls it (`microdense` commands, the bench worker); a
Python caller opts in with `retain_freed_memory()`. `MICRODENSE_RETAIN_FREED_MEMORY=0` turns it off.
"""
import ctypes
import ctypes.util
import os
import platform

__all__ = ["retain_freed_memory"]

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# the largest value mallopt takes (an int): blocks up to 2 GB come from the heap and stay there once freed
_THRESHOLD = 2 ** 31 - 1
ENV_SWITCH = "MICRODENSE_RETAIN_FREED_MEMORY"


def retain_freed_memory() -> bool:
    """Make glibc keep freed blocks of up to 2 GB for reuse instead of unmapping them.

    Returns:
        True when the setting took effect; False where it does not apply (not glibc, or switched off by
        `MICRODENSE_RETAIN_FREED_MEMORY=0`), which leaves the allocator as it was.
    """
    if os.environ.get(ENV_SWITCH, "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    # NOTE: the trim threshold first: with only the mmap one raised, freed blocks at the heap's top are trimmed away.
    return bool(libc.mallopt(_M_TRIM_THRESHOLD, _THRESHOLD)) and bool(libc.mallopt(_M_MMAP_THRESHOLD, _THRESHOLD))
