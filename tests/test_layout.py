"""The shape of the tree, as the architecture asks: one job per module, each of a readable size."""

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import kgw

# The option table is one long list of settings, and is allowed to be.
LONG_ALLOWED = {"config.py"}
MAX_LINES = 400


class ModuleSizeTests(SynchronousTestCase):
    def test_noModuleOverLimit(self) -> None:
        """No module of kgw/ is over 400 lines, except the option table."""
        root = Path(kgw.__file__).parent
        sizes = {
            str(path.relative_to(root)): len(path.read_text(encoding="utf-8").splitlines())
            for path in root.rglob("*.py")
        }
        self.assertGreater(len(sizes), 50)
        over = {name: n for name, n in sizes.items() if n > MAX_LINES}
        self.assertEqual(over.keys() - LONG_ALLOWED, set(), f"modules over {MAX_LINES}: {over}")
