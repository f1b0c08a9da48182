"""The option table and C{twistd kgw}'s command-line parsing."""

from __future__ import annotations

from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from kgw.config import Config, ConfigError, envVar, flag
from kgw.tap import Options


def parse(*args: str, environ: dict[str, str] | None = None) -> Config:
    options = Options(environ=environ or {})
    options.parseOptions(list(args))
    assert options.config is not None
    return options.config


class DefaultsTests(SynchronousTestCase):
    def test_listensOnLoopback8888(self):
        """With no options the gateway listens on 127.0.0.1:8888, as KG does."""
        config = parse()
        self.assertEqual((config.ip, config.port), ("127.0.0.1", 8888))

    def test_listKernelsOffByDefault(self):
        """Listing kernels is off unless asked for, as in KG."""
        self.assertFalse(parse().list_kernels)


class SpellingTests(SynchronousTestCase):
    def test_threeSpellingsAgree(self):
        """A flag, a KG_* variable and KG's class-qualified spelling reach the same setting."""
        for option, value, expected in (
            ("port", "9999", 9999),
            ("max_kernels", "3", 3),
            ("base_url", "gw", "/gw/"),
            ("list_kernels", "True", True),
        ):
            f = {f.name: f for f in Config.options()}[option]
            owner = f.metadata["owner"]
            viaFlag = parse(f"--{flag(f)}={value}")
            viaEnv = parse(environ={envVar(f): value})
            viaClass = parse(f"--{owner}.{option}={value}")
            self.assertEqual(
                {getattr(c, option) for c in (viaFlag, viaEnv, viaClass)}, {expected}, option
            )

    def test_commandLineBeatsEnvironment(self):
        """The command line wins over the environment, which wins over the default."""
        self.assertEqual(parse("--port=1", environ={"KG_PORT": "2"}).port, 1)
        self.assertEqual(parse(environ={"KG_PORT": "2"}).port, 2)

    def test_booleanForms(self):
        """Booleans accept KG's True/False and 1/0."""
        for text, expected in (("True", True), ("1", True), ("False", False), ("0", False)):
            self.assertEqual(parse(f"--list-kernels={text}").list_kernels, expected)

    def test_qualifiedSpellingIsCaseInsensitiveOnClass(self):
        """KG's class names match whatever their case, as traitlets users type them."""
        self.assertEqual(parse("--kernelgatewayapp.port=7").port, 7)


class BadValueTests(SynchronousTestCase):
    def test_nonIntegerPort(self):
        """A port that is not an integer is a usage error naming the option."""
        error = self.assertRaises(UsageError, parse, "--port=http")
        self.assertIn("--port", str(error))

    def test_portOutOfRange(self):
        """A port above 65535 is refused."""
        self.assertRaises(UsageError, parse, "--port=70000")

    def test_negativeMaxKernels(self):
        """A negative max_kernels is refused."""
        error = self.assertRaises(UsageError, parse, "--max-kernels=-1")
        self.assertIn("max-kernels", str(error))

    def test_badEnvironmentValueNamesVariable(self):
        """A bad value from the environment names the variable it came from."""
        error = self.assertRaises(UsageError, parse, environ={"KG_PORT": "x"})
        self.assertIn("KG_PORT", str(error))

    def test_badBoolean(self):
        """A boolean that is neither true nor false is refused."""
        self.assertRaises(UsageError, parse, "--list-kernels=maybe")

    def test_unknownFlag(self):
        """An unknown flag is a usage error."""
        self.assertRaises(UsageError, parse, "--no-such-option=1")

    def test_unknownQualifiedOption(self):
        """An unknown class-qualified option is a usage error naming it."""
        error = self.assertRaises(UsageError, parse, "--KernelGatewayApp.no_such=1")
        self.assertIn("KernelGatewayApp.no_such", str(error))


class ResolveTests(SynchronousTestCase):
    def test_resolveRaisesConfigError(self):
        """Config.resolve reports the source of a bad value."""
        error = self.assertRaises(ConfigError, Config.resolve, {"port": "x"}, {})
        self.assertIn("--port", str(error))

    def test_helpNamesEveryOption(self):
        """--help shows every option of the table with its environment variable."""
        usage = str(Options())
        for f in Config.options():
            self.assertIn(f"--{flag(f)}=", usage)
            self.assertIn(envVar(f), usage.replace("\n", " ").replace("  ", " "))


class ReadmeTests(SynchronousTestCase):
    def test_readmeOptionTableMatchesCode(self):
        """The README's option table is the one the code generates from its option table."""
        import os

        from kgw.config import markdownTable

        readme = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")
        with open(readme, encoding="utf-8") as f:
            text = f.read()
        start = text.index("<!-- options:start -->\n") + len("<!-- options:start -->\n")
        end = text.index("<!-- options:end -->")
        self.assertEqual(text[start:end].strip(), markdownTable())
