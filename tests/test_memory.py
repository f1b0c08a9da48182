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
    def rss(self, mode: str) -> int:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        output = subprocess.run(
            [sys.executable, "-c", FRAGMENT, mode], env=env, capture_output=True, check=True
        )
        return int(output.stdout)

    def test_freedHeapReturned(self):
        """Blocks freed in the middle of glibc's heap stay resident until trimmed."""
        if platform.libc_ver()[0] != "glibc":
            raise SkipTest("glibc only")
        self.assertGreater(self.rss("keep"), 250)
        self.assertLess(self.rss("trim"), 100)
