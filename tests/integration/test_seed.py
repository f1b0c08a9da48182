"""Seed notebooks, prespawned kernels and forced kernel names, with real kernels."""

from __future__ import annotations

import json
import os
import sys

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from twisted.trial.unittest import TestCase

from tests.integration.test_daemon import spawnTwistd
from tests.support import RunningGateway, childProcesses, stdout, withTimeout

PYTHON = {"name": "python3", "language": "python", "display_name": "Python 3"}


def writeNotebook(testCase: TestCase, *cells: str) -> str:
    """A seed notebook for the python3 kernelspec with C{cells} as code cells; its path."""
    path = os.path.abspath(testCase.mktemp()) + ".ipynb"
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(source) for source in cells],
        metadata={"kernelspec": PYTHON},
    )
    with open(path, "w") as f:
        nbformat.write(notebook, f)
    return path


class SeedTests(TestCase):
    """Code cells of the seed notebook run on new kernels."""

    timeout = 120

    async def test_newKernelSeeded(self):
        """When POST answers, a new kernel has run the seed's cells in order and is idle again."""
        seed = writeNotebook(self, "SEEDED = 41", "SEEDED += 1")
        gateway = await RunningGateway(self, seed_uri=seed).start()
        model = await gateway.startKernel()
        self.assertEqual(model["execution_state"], "idle")
        client = await gateway.connect(model["id"])
        messages = await client.execute("print(SEEDED)")
        self.assertEqual(stdout(messages), "42\n")

    async def test_failingCellRefusesKernel(self):
        """A seed cell that raises: 500 naming the error, no kernel listed, no process left."""
        seed = writeNotebook(self, "SEEDED = 42", "raise ValueError('no seed for you')")
        before = childProcesses()
        gateway = await RunningGateway(self, seed_uri=seed).start()
        code, body = await gateway.request("POST", "api/kernels", {})
        self.assertEqual(code, 500, body)
        self.assertEqual(body["reason"], "Internal Server Error")
        self.assertIn("ValueError: no seed for you", body["message"])
        self.assertEqual(childProcesses() - before, set())
        code, listed = await gateway.request("GET", "api/kernels")
        self.assertEqual((code, listed), (200, []))

    async def test_kernelDyingInSeedRefused(self):
        """A seed cell that ends the kernel process fails the start instead of hanging it."""
        seed = writeNotebook(self, "import os; os._exit(1)")
        gateway = await RunningGateway(self, seed_uri=seed).start()
        code, body = await gateway.request("POST", "api/kernels", {})
        self.assertEqual(code, 500, body)
        self.assertIn("died while running the seed notebook", body["message"])
        code, listed = await gateway.request("GET", "api/kernels")
        self.assertEqual((code, listed), (200, []))

    async def test_prespawnedKernelsSeeded(self):
        """prespawn_count=2 gives two listed, seeded kernels, usable by id."""
        seed = writeNotebook(self, "SEEDED = 42")
        gateway = await RunningGateway(self, seed_uri=seed, prespawn_count=2).start()
        await withTimeout(gateway.kernels.whenPrespawned())
        code, listed = await gateway.request("GET", "api/kernels")
        self.assertEqual(code, 200)
        self.assertEqual([model["name"] for model in listed], ["python3", "python3"])
        for model in listed:
            client = await gateway.connect(model["id"])
            messages = await client.execute("print(SEEDED)")
            self.assertEqual(stdout(messages), "42\n")


class ForceKernelNameTests(TestCase):
    """force_kernel_name with a kernelspec of its own."""

    timeout = 120

    def writeSpec(self) -> KernelSpecManager:
        """Kernelspecs with a C{forced} one, which sets C{FORCED=yes} in its kernels."""
        root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "forced"))
        spec = {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Forced Python",
            "language": "python",
            "env": {"FORCED": "yes"},
        }
        with open(os.path.join(root, "forced", "kernel.json"), "w") as f:
            json.dump(spec, f)
        return KernelSpecManager(kernel_dirs=[root])

    async def test_unknownNameStartsForced(self):
        """POST naming an unknown kernelspec starts the forced one, with 201."""
        gateway = await RunningGateway(
            self, {"specs": self.writeSpec()}, force_kernel_name="forced"
        ).start()
        model = await gateway.startKernel(name="nope")
        self.assertEqual(model["name"], "forced")
        client = await gateway.connect(model["id"])
        messages = await client.execute("import os; print(os.environ.get('FORCED'))")
        self.assertEqual(stdout(messages), "yes\n")


class SeedStartUpTests(TestCase):
    """A seed notebook that cannot be used stops C{twistd kgw} before it starts."""

    timeout = 60

    async def test_missingNotebook(self):
        """C{twistd kgw --seed-uri=/missing.ipynb} exits non-zero, naming the file."""
        process = spawnTwistd(self, "-n", "--pidfile=", "kgw", "--seed-uri=/missing.ipynb")
        code = await withTimeout(process.ended)
        self.assertNotEqual(code, 0)
        self.assertIn(b"/missing.ipynb", process.output)
        self.assertIn(b"No such file", process.output)
