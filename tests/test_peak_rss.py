"""A child process's own peak memory (core.memory.own_peak_rss), as the tests that bound a peak
read it: not its parent's, which ru_maxrss reports after Python's vfork + exec (a pytest process at
2.8 GB made a 1 GB base pass read 2.8 GB)."""

import subprocess
import sys

CHILD = """
from quantkit.core.memory import own_peak_rss
start = own_peak_rss()
block = bytearray(200 * 2**20)
for i in range(0, len(block), 4096):
    block[i] = 1
print(start, own_peak_rss())
"""


def test_a_child_reads_its_own_peak_not_its_parents():
    parent = bytearray(600 * 2**20)
    for i in range(0, len(parent), 4096):
        parent[i] = 1  # the parent's pages resident: 600 MB above the child's own
    start, after = map(
        int, subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True).stdout.split()
    )
    assert start < 300 * 2**20  # the interpreter and quantkit.core.memory, not the parent's 600 MB
    assert after - start >= 190 * 2**20  # its own 200 MB block counts
    del parent
