"""The metrics page of a real gateway, with real kernels: relayed messages, websockets, modes."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import TestCase

from kgw.metrics import TO_CLIENT, TO_KERNEL
from tests.integration.test_notebook_http import fetch, serve, writeNotebook
from tests.support import RunningGateway, stdout

TOKEN = "metr1cs"
HEADER = {"Authorization": [f"token {TOKEN}"]}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(gateway: RunningGateway) -> Samples:
    """The gateway's metrics page, as each sample's value by its name and labels."""
    code, body = await gateway.request("GET", "metrics", headers=HEADER)
    assert code == 200, (code, body)
    text = body.decode("utf-8") if isinstance(body, bytes) else str(body)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scraped: Samples, name: str, **labels: str) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


class RelayedMessageTests(TestCase):
    """What running code over a channels websocket counts."""

    timeout = 120

    async def test_executeMovesTheCounters(self) -> None:
        """An execute moves the relayed-message counters; kernel, start and websocket show."""
        gateway = await RunningGateway(self).start()
        kernel = await gateway.startKernel(name="python3")
        client = await gateway.connect(kernel["id"], v1=True)
        before = await scrape(gateway)
        messages = await client.execute("print('counted')")
        self.assertEqual(stdout(messages), "counted\n")
        after = await scrape(gateway)

        def moved(channel: str, direction: str) -> float:
            name = "kgw_messages_total"
            return value(after, name, channel=channel, direction=direction) - value(
                before, name, channel=channel, direction=direction
            )

        self.assertEqual(moved("shell", TO_KERNEL), 1)
        self.assertEqual(moved("shell", TO_CLIENT), 1)
        # busy, execute_input, the stream, idle
        self.assertGreaterEqual(moved("iopub", TO_CLIENT), 4)
        self.assertEqual(value(after, "kgw_websocket_connections"), 1)
        self.assertEqual(
            value(after, "kgw_kernels", kernel_name="python3", execution_state="idle"), 1
        )
        self.assertEqual(
            value(
                after,
                "kgw_kernel_start_duration_seconds_count",
                kernel_name="python3",
                outcome="started",
            ),
            1,
        )
        self.assertGreater(
            value(
                after,
                "kgw_kernel_start_duration_seconds_sum",
                kernel_name="python3",
                outcome="started",
            ),
            0,
        )
        requests = "kgw_http_request_duration_seconds_count"
        self.assertEqual(
            value(
                after,
                requests,
                method="GET",
                route="/api/kernels/{kernel_id}/channels",
                status="101",
            ),
            1,
        )
        self.assertEqual(
            value(after, requests, method="POST", route="/api/kernels", status="201"), 1
        )
        self.assertFalse([key for key in after if kernel["id"] in str(key)])


class NotebookHTTPMetricsTests(TestCase):
    """The metrics page in notebook-http mode."""

    timeout = 120

    async def test_servedWithEndpointTemplates(self) -> None:
        """In notebook-http mode /metrics is served too, endpoints named by their declared path."""
        notebook = writeNotebook(self, "# GET /hello/:name\nprint('hi')")
        gateway = await serve(self, notebook, auth_token=TOKEN)
        answer = await fetch(
            gateway, "GET", "hello/you", headers={"Authorization": f"token {TOKEN}"}
        )
        self.assertEqual(answer.code, 200)
        scraped = await scrape(gateway)
        self.assertEqual(
            value(
                scraped,
                "kgw_http_request_duration_seconds_count",
                method="GET",
                route="/hello/:name",
                status="200",
            ),
            1,
        )
        starts = value(
            scraped,
            "kgw_kernel_start_duration_seconds_count",
            kernel_name="python3",
            outcome="started",
        )
        self.assertGreaterEqual(starts, 1)
