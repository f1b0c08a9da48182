"""
The figures' rows, their targets, and the table: printed, and written as Markdown and JSON.

Each subject's value in a row is the median of its per-round values; ratios are kgw's median
over the other's.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KGW, KG, DIRECT = "kgw", "KG", "direct"
KGW_WARM = "kgw-warm"


@dataclass(frozen=True)
class Target:
    """kgw's value over another subject's (or alone, when C{against} is empty) vs a bound."""

    against: str
    op: str
    bound: float
    unit: str = ""

    def describe(self) -> str:
        if self.against:
            return f"kgw/{self.against} {self.op} {self.bound:g}"
        return f"kgw {self.op} {self.bound:g}{self.unit}"

    def met(self, values: dict[str, float]) -> bool | None:
        mine = values.get(KGW)
        if mine is None:
            return None
        if self.against:
            other = values.get(self.against)
            if not other:
                return None
            mine /= other
        if self.op == "=":
            return mine == self.bound
        return mine <= self.bound if self.op == "<=" else mine >= self.bound


@dataclass(frozen=True)
class Row:
    """One line of the table. C{source} names the subject whose values fill the kgw column."""

    key: str
    title: str
    targets: tuple[Target, ...] = ()
    source: str = KGW
    note: str = ""


ROWS = (
    Row("rtt.median", "1. execute round trip, median (ms)", (Target(DIRECT, "<=", 1.25),)),
    Row("rtt.p99", "1. execute round trip, p99 (ms)"),
    Row("rtt_v1.median", "1. same, v1 protocol, median (ms)"),
    Row("rtt_v1.p99", "1. same, v1 protocol, p99 (ms)"),
    Row("relay.rate", "2. iopub relay, 3,000 displays (msgs/s)", (Target(KG, ">=", 1),)),
    Row("relay_v1.rate", "2. same, v1 protocol (msgs/s)"),
    Row("relay.kernel", "2. the kernel's own publishing rate (msgs/s)"),
    Row(
        "flood.rate",
        "2b. 20,000 msgs straight onto iopub (msgs/s)",
        (Target(DIRECT, ">=", 0.9),),
    ),
    Row("flood.lost", "2b. same, messages lost", (Target("", "=", 0),)),
    Row("flood_v1.rate", "2b. same, v1 protocol (msgs/s)", (Target(DIRECT, ">=", 0.9),)),
    Row("flood_v1.lost", "2b. same, v1 protocol, messages lost", (Target("", "=", 0),)),
    Row(
        "flood.cpu",
        "2b. gateway CPU per 10,000 msgs (s)",
        (Target("", "<=", 0.2, " s"),),
    ),
    Row("large.rate", "3. large output, 8 MB text/plain (MB/s)", (Target(DIRECT, ">=", 0.9),)),
    Row("large_v1.rate", "3. same, v1 protocol (MB/s)", (Target(DIRECT, ">=", 0.9),)),
    Row("start.start", "4. kernel start, no pool (ms)", (Target(KG, "<=", 1),)),
    Row(
        "start_warm.start",
        "4. kernel start, kgw --warm-kernels=2 (ms)",
        (Target("", "<=", 30, " ms"),),
        source=KGW_WARM,
    ),
    Row("cpu.per10k", "5. gateway CPU per 10,000 relayed msgs (s)", (Target(KG, "<=", 0.5),)),
    Row("rss.idle", "5. gateway RSS, idle (MB)"),
    Row("rss.kernels", "5. gateway RSS, 10 kernels (MB)"),
    Row("rss.per_kernel", "5. gateway RSS per kernel (MB)"),
    Row("rss.crowd", "5. gateway RSS after figure 7 (MB)"),
    Row("nb.rate", "6. notebook-http, 8 connections (req/s)", (Target(KG, ">=", 2),)),
    Row("nb.p99", "6. notebook-http, p99 latency (ms)"),
    Row("crowd.total", "7. 100 clients on 10 kernels, total (s)"),
    Row("crowd.p99", "7. same, p99 round trip (ms)"),
    Row("crowd.lost", "7. same, lost replies", (Target("", "=", 0),)),
    Row("scale.before", "8. gateway RSS, 10 kernels (MB)"),
    Row("scale.after", "8. same, 1,000 idle websockets on them (MB)"),
    Row("scale.per_ws", "8. RSS per idle websocket (KB)", (Target(KG, "<=", 0.5),)),
    Row(
        "scale.total",
        "8. 1,000 clients x 20 executes, 100 kernels (s)",
        (Target(KG, "<=", 0.33),),
    ),
    Row("scale.p99", "8. same, p99 round trip (ms)"),
    Row("scale.lost", "8. same, lost replies", (Target("", "=", 0),)),
    Row("scale.rss", "8. same, gateway RSS after (MB)"),
)


@dataclass
class Results:
    """Per-round values: C{values[row key][subject]} is one value per round."""

    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, key: str, subject: str, value: float) -> None:
        self.values.setdefault(key, {}).setdefault(subject, []).append(value)

    def medians(self, key: str) -> dict[str, float]:
        return {s: statistics.median(v) for s, v in self.values.get(key, {}).items() if v}


def _number(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 999.5:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _ratio(mine: float | None, other: float | None) -> str:
    if mine is None or not other:
        return "—"
    return f"{mine / other:.2f}"


def table_rows(results: Results) -> list[dict[str, Any]]:
    """The table's rows, with the numbers the JSON keeps and the text the table shows."""
    rows = []
    for row in ROWS:
        medians = results.medians(row.key)
        if not medians:
            continue
        values = {KGW: medians.get(row.source), KG: medians.get(KG), DIRECT: medians.get(DIRECT)}
        present = {k: v for k, v in values.items() if v is not None}
        verdicts = [t.met(present) for t in row.targets]
        if not row.targets:
            met = "—"
        elif any(v is None for v in verdicts):
            met = "n/a"
        else:
            met = "yes" if all(verdicts) else "NO"
        rows.append(
            {
                "key": row.key,
                "figure": row.title,
                "values": values,
                "rounds": {s: results.values[row.key].get(s, []) for s in results.values[row.key]},
                "cells": [
                    row.title,
                    _number(values[KGW]),
                    _number(values[KG]),
                    _number(values[DIRECT]),
                    _ratio(values[KGW], values[KG]),
                    _ratio(values[KGW], values[DIRECT]),
                    ", ".join(t.describe() for t in row.targets) or "—",
                    met,
                ],
            }
        )
    return rows


HEADER = ["figure", "kgw", "KG", "direct", "kgw/KG", "kgw/direct", "target", "met?"]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table, its columns padded so that it reads as well in a terminal."""
    lines = [HEADER, *(r["cells"] for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    right = range(1, 6)

    def render(cells: list[str]) -> str:
        padded = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w - 1) + ":" if i in right else "-" * w for i, w in enumerate(widths)]
    return "\n".join([render(HEADER), render(rule), *(render(r["cells"]) for r in rows)])


def write(
    directory: Path, name: str, rows: list[dict[str, Any]], context: dict[str, Any]
) -> tuple[Path, Path]:
    """Write C{name}.md and C{name}.json into C{directory}; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    markdown = directory / f"{name}.md"
    lines = [
        "# kgw benchmark",
        "",
        f"Run {context['date']} with `{context['command']}`; {context['duration_s']:.0f} s;"
        f" load average {context['load']}.",
        "",
        "Machine: " + context["machine"] + ".",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in context["versions"].items()) + ".",
        "",
        "Settings: " + ", ".join(f"{k}={v}" for k, v in context["settings"].items()) + ".",
        "",
        markdown_table(rows),
        "",
    ]
    if context["notes"]:
        lines += ["Notes:", "", *(f"- {n}" for n in context["notes"]), ""]
    markdown.write_text("\n".join(lines), encoding="utf-8")
    data = directory / f"{name}.json"
    payload = {**context, "rows": [{k: v for k, v in r.items() if k != "cells"} for r in rows]}
    data.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return markdown, data


def rerender(data: Path) -> tuple[Path, Path]:
    """
    Write a results file's tables again from its per-round values, with today's rows and
    targets (the measurements stay as they were).
    """
    payload = json.loads(data.read_text(encoding="utf-8"))
    results = Results(notes=list(payload.get("notes", [])))
    for row in payload["rows"]:
        for subject, rounds in row["rounds"].items():
            for value in rounds:
                results.add(row["key"], subject, value)
    context = {k: v for k, v in payload.items() if k != "rows"}
    return write(data.parent, data.stem, table_rows(results), context)


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:]:
        print(*rerender(Path(name)))
