"""What the benchmarks share: Redis and the development host as processes, percentiles, output."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.redis_server import free_port, running_redis_server

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"

__all__ = ["REPO", "running_devhost", "running_redis_server", "summary", "write_results"]


@contextmanager
def running_devhost(env: dict[str, str], *, code: Path = REPO) -> Iterator[tuple[str, int, int]]:
    """``python -m agentstream_dev.devhost`` on a free port; yields (host, port, pid).

    ``code``: the checkout whose app it serves (an older one, for before/after comparisons).
    """
    port = free_port()
    process_env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "OPENAI_"))}
    process_env.update(env)
    with tempfile.NamedTemporaryFile("w+", prefix="bench-devhost-", suffix=".log") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "agentstream_dev.devhost", "--port", str(port)],
            cwd=code,
            env=process_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the development host did not start:\n{log.read()}")
                try:
                    httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=10)
                    break
                except httpx.ConnectError:
                    time.sleep(0.05)
            yield "127.0.0.1", port, process.pid
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU time a process has used so far (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def summary(samples_seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / max in milliseconds."""
    if not samples_seconds:
        return {"n": 0, "p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    ordered = sorted(samples_seconds)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "n": len(ordered),
        "p50_ms": round(pick(0.50), 2),
        "p99_ms": round(pick(0.99), 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_1m": round(load[0], 2),
    }


def write_results(name: str, results: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **results}, indent=2) + "\n")
    print(f"\nwrote {path.relative_to(REPO)}")
    return path


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        print("  ".join(value.rjust(width) for value, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)
