"""Every target of the stream's hot path beside its result: ``python -m bench.targets``.

In about four minutes, one after the other (each prints its own table too):

- ``bench.writer``: round trips per token at 50 tokens/s with the configured flush timer;
- ``bench.append_cost``: Redis's CPU per append beside a bare ``XADD`` + ``PEXPIRE``;
- ``bench.replay``: resuming 5,000 events behind over HTTP;
- ``bench.hotpath``: the per-layer CPU of one event to one reader (200 clients on 10 streams, the
  development host as shipped and the worker, one run each);
- ``bench.latency``: token → client through the development host and the real worker for 1, 100
  and 1,000 clients, two interleaved runs of each (medians).

Then one table: each target, what was measured, the 1-minute load average while it was, and
whether it was met; the machine above it. Latency targets are for an idle machine: read them
beside the load.
"""

from __future__ import annotations

import json
import os
from typing import Any

from . import append_cost, hotpath, latency, replay, writer
from .common import RESULTS, machine, print_table

LATENCY_TARGETS_MS = {1: 30.0, 100: 40.0, 1000: 100.0}
RESUME_TARGET_MS = 25.0
MAX_OVER_P99 = 3.0
HOTPATH_CLIENTS = 200


def _load(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((RESULTS / f"{name}.json").read_text())
    return result


def _met(ok: bool) -> str:
    return "yes" if ok else "NO"


def _loads(values: list[float]) -> str:
    if not values:
        return "-"
    low, high = min(values), max(values)
    return f"{low:.1f}" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}–{high:.1f}"


def target_rows() -> list[list[str]]:
    rows: list[list[str]] = []
    runs = _load("latency")["results"]
    for host in ("devhost", "worker"):
        for clients, target in LATENCY_TARGETS_MS.items():
            row = next((r for r in runs if r["host"] == host and r["clients"] == clients), None)
            if row is None:
                rows.append(
                    [f"{host}: {clients} client(s), p99 < {target:g} ms", "not run", "-", "-"]
                )
                continue
            each = ", ".join(f"{v:.1f}" for v in row["p99_runs"])
            measured = f"p99 {row['p99_ms']:.1f} ms (runs: {each})"
            ok = row["p99_ms"] < target and row["errors"] == 0
            if clients == 1000:
                measured += f", {row['errors']} errors, {row['reader_connections']} reader conns"
            rows.append(
                [
                    f"{host}: {clients} client(s) on {row['streams']} stream(s), token → client "
                    f"p99 < {target:g} ms",
                    measured,
                    _loads(row["loads"]),
                    _met(ok),
                ]
            )
            if clients == 1000:
                ratio = row["max_over_p99"]
                rows.append(
                    [
                        f"{host}: 1,000 clients, max token → client within {MAX_OVER_P99:g}× p99",
                        f"{ratio:.2f}× (max {row['max_ms']:.1f} ms)",
                        _loads(row["loads"]),
                        _met(ratio <= MAX_OVER_P99),
                    ]
                )
    layers = _load(f"hotpath-{HOTPATH_CLIENTS}")
    for result in layers["results"]:
        split = ", ".join(
            f"{layer} {us:.1f}" for layer, us in result["layer_us_per_delivery"].items() if us
        )
        rows.append(
            [
                f"per-layer CPU of one event to one reader ({result['variant']})",
                f"{result['cpu_us_per_delivery']:.1f} µs: {split}",
                _loads([r["load_average_1m"] for r in result["runs"]]),
                "shown",
            ]
        )
    resumed = _load("replay")
    resume_ms = resumed["this"]["resume_total"]["median_ms"]
    rows.append(
        [
            f"resume 5,000 events behind over HTTP < {RESUME_TARGET_MS:g} ms",
            f"median {resume_ms:.1f} ms (best {resumed['this']['resume_total']['best_ms']:.1f})",
            _loads(resumed["load_average_1m"]),
            _met(resume_ms < RESUME_TARGET_MS),
        ]
    )
    costs = _load("append_cost")
    by_variant = {r["variant"]: r for r in costs["results"]}
    ours, bare = by_variant["APPEND (this)"], by_variant["bare XADD + PEXPIRE"]
    rows.append(
        [
            "Redis CPU per append beside a bare XADD + PEXPIRE",
            f"{ours['command_usec_per_append']:.1f} µs, {ours['commands_per_append']:g} commands "
            f"(bare: {bare['command_usec_per_append']:.1f} µs)",
            _loads(costs["loads"]),
            "shown",
        ]
    )
    paced = _load("writer")["results"][0]
    rows.append(
        [
            "writer at 50 tokens/s: 0.50 round trips per token (the documented trade-off)",
            f"{paced['round_trips_per_token']:.2f} ({paced['case']})",
            f"{_load('writer')['machine']['load_average_1m']:.1f}",
            _met(paced["round_trips_per_token"] <= 0.505),
        ]
    )
    return rows


def main() -> None:
    print(f"=== bench.targets, load average {os.getloadavg()[0]:.2f} at the start", flush=True)
    for name, run in (
        ("writer", lambda: writer.main([])),
        ("append_cost", lambda: append_cost.main(["--repeats", "3"])),
        ("replay", lambda: replay.main([])),
        (
            "hotpath",
            lambda: hotpath.main(
                [
                    "--clients",
                    str(HOTPATH_CLIENTS),
                    "--repeats",
                    "1",
                    "--stacks",
                    "httptools+uvloop,httptools",
                    "--hosts",
                    "devhost,worker",
                ]
            ),
        ),
        ("latency", lambda: latency.main(["--modes", "hub", "--repeats", "2"])),
    ):
        print(f"\n=== bench.{name} ===", flush=True)
        run()
    about = machine()
    print(
        f"\n=== the targets: {about['cpu_model']}, {about['cpus']} CPUs, {about['platform']}, "
        f"Python {about['python']} (the worker: its own 3.13), load average "
        f"{about['load_average_1m']:.2f} now ==="
    )
    print_table(["target", "measured", "load", "met"], target_rows())
    print("(latency targets are for an idle machine: read each beside its load)")


if __name__ == "__main__":
    main()
