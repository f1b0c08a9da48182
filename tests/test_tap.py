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


class LogLevelTests(SynchronousTestCase):
    def test_twistdLogsAtChosenLevel(self):
        """Under twistd, --log-level=WARN drops info events and keeps warnings."""
        import io
        import time

        from twisted.logger import LogLevel
        from twisted.scripts.twistd import ServerOptions

        server = ServerOptions()
        server.parseOptions(["-n", "kgw", "--log-level=WARN"])
        stream = io.StringIO()
        self.patch(__import__("sys"), "stdout", stream)
        observer = server["logger"]()
        for level in (LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error):
            observer(
                {
                    "log_level": level,
                    "log_namespace": "kgw.test",
                    "log_format": f"event at {level.name}",
                    "log_time": time.time(),
                }
            )
        self.assertEqual(
            [line.split("] ", 1)[1] for line in stream.getvalue().splitlines()],
            ["event at warn", "event at error"],
        )

    def test_jsonLinesAtChosenLevel(self):
        """With --log-format=json each event kept by --log-level is one line of JSON."""
        import io
        import json
        import time

        from twisted.logger import LogLevel
        from twisted.scripts.twistd import ServerOptions

        server = ServerOptions()
        server.parseOptions(["-n", "kgw", "--log-level=WARN", "--log-format=json"])
        stream = io.StringIO()
        self.patch(__import__("sys"), "stdout", stream)
        observer = server["logger"]()
        for level in (LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error):
            observer(
                {
                    "log_level": level,
                    "log_namespace": "kgw.test",
                    "log_format": "kernel {kernelId} at {level}\nsecond line \u2028",
                    "log_time": time.time(),
                    "kernelId": "k-1",
                    "level": level.name,
                    "unwritable": object(),
                }
            )
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        self.assertEqual([line["level"] for line in lines], ["warn", "error"])
        for line in lines:
            self.assertEqual(line["namespace"], "kgw.test")
            self.assertEqual(line["kernelId"], "k-1")
            self.assertTrue(line["message"].startswith("kernel k-1 at "), line)
            self.assertNotIn("unwritable", line)

    def test_logFormats(self):
        """The log format is text by default; json is accepted, in any case; others are refused."""
        self.assertEqual(parse().log_format, "text")
        self.assertEqual(parse("--log-format=JSON").log_format, "json")
        self.assertEqual(parse(environ={"KG_LOG_FORMAT": "json"}).log_format, "json")
        self.assertRaises(UsageError, parse, "--log-format=xml")

    def test_logLevelSpellings(self):
        """KG's level names and numbers are accepted; others are refused."""
        self.assertEqual(parse("--log-level=DEBUG").log_level, "debug")
        self.assertEqual(parse("--Application.log_level=40").log_level, "error")
        self.assertRaises(UsageError, parse, "--log-level=LOUD")


class ConfigFileTests(SynchronousTestCase):
    def write(self, name: str, text: str) -> str:
        import os

        path = os.path.join(self.mktemp(), name)
        os.makedirs(os.path.dirname(path))
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_jsonFileInKGsShape(self):
        """A KG JSON config file (options under class names) sets options."""
        path = self.write(
            "kg.json",
            '{"KernelGatewayApp": {"port": 9001, "max_kernels": 4},'
            ' "JupyterWebsocketPersonality": {"list_kernels": true, "env_whitelist": ["A"]}}',
        )
        config = parse(f"--config={path}")
        self.assertEqual(
            (config.port, config.max_kernels, config.list_kernels, config.env_whitelist),
            (9001, 4, True, ("A",)),
        )

    def test_tomlFile(self):
        """A TOML file of flat option names sets options."""
        path = self.write("kgw.toml", 'port = 9002\nbase_url = "gw"\n')
        config = parse(f"--config={path}")
        self.assertEqual((config.port, config.base_url), (9002, "/gw/"))

    def test_fileLosesToEnvironmentAndCommandLine(self):
        """The environment beats the file, and the command line beats both."""
        path = self.write("kgw.json", '{"port": 9003}')
        self.assertEqual(parse(f"--config={path}", environ={"KG_PORT": "9004"}).port, 9004)
        self.assertEqual(parse(f"--config={path}", "--port=9005").port, 9005)

    def test_badFiles(self):
        """A missing, malformed or unknown-option file is a usage error naming the problem."""
        missing = self.assertRaises(UsageError, parse, "--config=/nonexistent/kgw.json")
        self.assertIn("/nonexistent/kgw.json", str(missing))
        bad = self.write("bad.json", "{nope")
        self.assertRaises(UsageError, parse, f"--config={bad}")
        unknown = self.write("unknown.json", '{"colour": "blue"}')
        self.assertIn("colour", str(self.assertRaises(UsageError, parse, f"--config={unknown}")))
        wrongType = self.write("type.json", '{"port": "eighty"}')
        self.assertIn("port", str(self.assertRaises(UsageError, parse, f"--config={wrongType}")))


class CheckTests(SynchronousTestCase):
    def test_prespawnOverMaxKernels(self):
        """prespawn_count above max_kernels is a start-up error."""
        error = self.assertRaises(UsageError, parse, "--prespawn-count=3", "--max-kernels=2")
        self.assertIn("prespawn", str(error))

    def test_apiAliases(self):
        """KG's module names for the two APIs are accepted; other names are refused."""
        self.assertEqual(parse("--api=kernel_gateway.jupyter_websocket").api, "jupyter-websocket")
        self.assertRaises(UsageError, parse, "--api=graphql")

    def test_listsFromEnvironment(self):
        """List options read comma-separated variables and traitlets list literals."""
        self.assertEqual(parse(environ={"KG_ENV_WHITELIST": "A,B"}).env_whitelist, ("A", "B"))
        self.assertEqual(parse("--env-whitelist=['C', 'D']").env_whitelist, ("C", "D"))

    def test_listenRepeatable(self):
        """--listen may be given several times."""
        config = parse("--listen=tcp:1", "--listen=unix:/tmp/x.sock")
        self.assertEqual(config.listen, ("tcp:1", "unix:/tmp/x.sock"))
