"""Freed memory given back to the system: the trimming service, and glibc's trim itself."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from kgw.memory import TRIM_INTERVAL, MemoryTrimmer

# Frees 300 blocks of 1 MB under a smaller block that outlives them, as a flood's messages are
# freed under the gateway's own objects; trims if asked; prints the resident memory in MB.
FRAGMENT = """
import sys
warmup = b"w" * (2 * 10**6)
del warmup  # after this free, glibc serves 1 MB blocks from its heap
large = [b"x" * 10**6 for _ in range(300)]
kept = b"y" * 100_000
del large
if sys.argv[1] == "trim":
    from kgw.memory import mallocTrim
    mallocTrim()()
for line in open("/proc/self/status"):
    if line.startswith("VmRSS:"):
        print(int(line.split()[1]) // 1024)
"""

# Holds two blocks of 8 MB at once, three times over, as the gateway holds a large output while
# it relays it (read from ZeroMQ, and as the websocket frame); with glibc's thresholds kept if
# asked; prints the pages faulted in during the last time.
LARGE_MESSAGES = """
import resource
import sys
if sys.argv[1] == "keep":
    from kgw.memory import keepLargeBlocks
    assert keepLargeBlocks()
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    read = b"x" * 8_000_000
    frame = read + b"y"
    del read, frame
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def runPython(code: str, mode: str) -> int:
    """Run C{code} in a new Python with C{mode} as its argument; return the number it prints."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    output = subprocess.run(
        [sys.executable, "-c", code, mode], env=env, capture_output=True, check=True
    )
    return int(output.stdout)


class TrimmerTests(SynchronousTestCase):
    def test_trimsEveryInterval(self):
        """While running, the service trims every TRIM_INTERVAL seconds; stopped, no more."""
        clock = Clock()
        trims: list[float] = []
        trimmer = MemoryTrimmer(clock, lambda: trims.append(clock.seconds()))
        trimmer.startService()
        clock.pump([TRIM_INTERVAL] * 3)
        self.assertEqual(trims, [TRIM_INTERVAL, 2 * TRIM_INTERVAL, 3 * TRIM_INTERVAL])
        trimmer.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])


class MallocTrimTests(SynchronousTestCase):
    def test_freedHeapReturned(self):
        """Blocks freed in the middle of glibc's heap stay resident until trimmed."""
        if platform.libc_ver()[0] != "glibc":
            raise SkipTest("glibc only")
        self.assertGreater(runPython(FRAGMENT, "keep"), 250)
        self.assertLess(runPython(FRAGMENT, "trim"), 100)


class KeepLargeBlocksTests(SynchronousTestCase):
    def test_largeMessagesReuseMemory(self):
        """
        With glibc's thresholds kept, two 8 MB blocks held at once reuse the memory of the
        last two rather than fault in some 4,000 new pages each time.
        """
        if platform.libc_ver()[0] != "glibc":
            raise SkipTest("glibc only")
        self.assertGreater(runPython(LARGE_MESSAGES, "default"), 1500)
        self.assertLess(runPython(LARGE_MESSAGES, "keep"), 200)
