"""Freed activation memory stays in the process: the second allocation of a large tensor faults no fresh pages."""
import platform
import subprocess
import sys

import pytest

# Allocate and fill a 64 MB tensor again and again, as training steps do; print the page faults of fills 4-8,
# before and after the setting. (Measuring only the second fill was flaky: an aligned block can be a few bytes too
# small to reuse once a small allocation lands right after it, and then comes from fresh memory once.)
_PROBE = """
import resource, sys, torch
from microdense.allocator import retain_freed_memory

def faults_of_later_fills():
    for _ in range(3):
        torch.empty(16 * 2 ** 20).fill_(1.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.empty(16 * 2 ** 20).fill_(1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

plain = faults_of_later_fills()
took = retain_freed_memory()
print(plain, took, faults_of_later_fills())
"""


def _probe(env_switch: str) -> tuple:
    env = {"MICRODENSE_RETAIN_FREED_MEMORY": env_switch, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, check=True).stdout
    plain, took, retained = out.split()
    return int(plain), took == "True", int(retained)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's mallopt")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    plain, took, retained = _probe("1")
    assert took
    assert plain > 5 * 16  # 64 MB unmapped on free and faulted in again: 16,384 pages of 4 KB (32 of 2 MB under THP)
    assert retained < plain / 20


def test_switched_off_by_the_environment_leaves_the_allocator_alone():
    plain, took, retained = _probe("0")
    assert not took
    if platform.libc_ver()[0] == "glibc":
        assert retained > 5 * 16
