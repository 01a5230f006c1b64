"""Redis's own CPU per appended entry: ``python -m bench.append_cost [--before DIR]``.

An entity's appends (``RunLog.append`` of ``message.delta`` events, after ``begin``: the path every
token takes) against the least a stream needs, a bare ``XADD`` + ``PEXPIRE`` pipeline. Measured
inside Redis, without ``MONITOR``: ``INFO commandstats`` (microseconds Redis spent in each command,
the script's inner commands counted again on their own lines) and ``INFO cpu`` (the server
process's user + system CPU, which also covers reading requests and writing replies). Both are CPU
measures that other processes on the machine move far less than they move wall time.

With ``--before DIR`` the appends of an older checkout's ``RunLog`` (its append script) run too,
interleaved with this checkout's and the bare pipeline, ``--repeats`` times each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import redis

from .common import REPO, print_table, running_redis_server, write_results

APPENDS = 5000

# Runs in a child process whose working directory is the checkout to measure, so that its
# ``agentstream`` (and so its append script) is the one imported.
_ENTITY_APPENDS = """
import sys, uuid, redis
from agentstream.events import MESSAGE_DELTA, RUN_QUEUED
from agentstream.streamlog.runlog import RunLog
client = redis.Redis(port=int(sys.argv[1]), decode_responses=True)
log = RunLog(client, uuid.uuid4().hex, uuid.uuid4().hex, ttl_seconds=3600, maxlen=100_000)
log.append(RUN_QUEUED, {"message": "bench"})
log.begin(uuid.uuid4().hex)
client.config_resetstat()
for i in range(int(sys.argv[2])):
    log.append(MESSAGE_DELTA, {"text": "tok%d " % i})
"""


def bare_appends(port: int, count: int) -> None:
    client = redis.Redis(port=port, decode_responses=True)
    key = f"bench-bare:{uuid.uuid4().hex}"
    client.config_resetstat()
    for i in range(count):
        with client.pipeline(transaction=False) as pipe:
            pipe.xadd(key, {"type": "message.delta", "run": "r", "seq": i, "ts": 1, "data": "{}"})
            pipe.pexpire(key, 3_600_000)
            pipe.execute()


def entity_appends(port: int, count: int, code: Path) -> None:
    subprocess.run(
        [sys.executable, "-c", _ENTITY_APPENDS, str(port), str(count)], cwd=code, check=True
    )


def measure(port: int, run: Any) -> dict[str, Any]:
    """Run ``run`` (it resets the statistics first) and read what Redis spent on it."""
    client = redis.Redis(port=port, decode_responses=True)
    before = client.info("cpu")
    run()
    after = client.info("cpu")
    stats = client.info("commandstats")
    used = sum(after[k] - before[k] for k in ("used_cpu_user", "used_cpu_sys"))
    top = {"cmdstat_evalsha", "cmdstat_eval", "cmdstat_xadd", "cmdstat_pexpire"}
    calls = {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}
    usec = {name.removeprefix("cmdstat_"): value["usec"] for name, value in stats.items()}
    scripted = "evalsha" in calls or "eval" in calls
    outer = (
        usec.get("evalsha", 0) + usec.get("eval", 0)
        if scripted
        else sum(usec[name.removeprefix("cmdstat_")] for name in top if name in stats)
    )
    # The data commands (a script's inner ones), not the connection's own (CLIENT, HELLO, ...).
    inner = {
        name: n
        for name, n in calls.items()
        if "|" not in name and name not in ("evalsha", "eval", "info", "ping", "hello", "select")
    }
    return {
        "command_usec_per_append": outer / APPENDS,
        "commands_per_append": sum(inner.values()) / APPENDS,
        "commands": {name: round(n / APPENDS, 2) for name, n in sorted(inner.items())},
        "server_cpu_usec_per_append": used * 1e6 / APPENDS,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="a checkout of the code to compare against")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    variants: list[tuple[str, Any]] = [("bare XADD + PEXPIRE", None), ("APPEND (this)", REPO)]
    if args.before:
        variants.append(("APPEND (before)", args.before.resolve()))
    measured: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
    loads: list[float] = []
    with running_redis_server() as port:
        for _ in range(args.repeats):
            for name, code in variants:
                if code is None:
                    result = measure(port, lambda: bare_appends(port, APPENDS))
                else:
                    result = measure(port, lambda c=code: entity_appends(port, APPENDS, c))
                measured[name].append(result)
                loads.append(os.getloadavg()[0])
    rows, results = [], []
    for name, runs in measured.items():
        row = {
            key: statistics.median(r[key] for r in runs)
            for key in (
                "command_usec_per_append",
                "server_cpu_usec_per_append",
                "commands_per_append",
            )
        }
        results.append({"variant": name, **row, "commands": runs[-1]["commands"], "runs": runs})
        rows.append(
            [
                name,
                row["command_usec_per_append"],
                row["server_cpu_usec_per_append"],
                row["commands_per_append"],
                " ".join(f"{k}={v:g}" for k, v in runs[-1]["commands"].items()),
            ]
        )
    print()
    print_table(
        ["variant", "command µs/append", "server CPU µs/append", "commands", "per append"], rows
    )
    print(
        f"(medians of {args.repeats} interleaved runs of {APPENDS} appends; load average "
        f"{min(loads):.1f}–{max(loads):.1f})"
    )
    write_results("append_cost", {"appends": APPENDS, "results": results, "loads": loads})


if __name__ == "__main__":
    main()
