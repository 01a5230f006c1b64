"""Start development hosts by forking a process that already imported their libraries.

A development host spends most of its start importing third-party libraries (with the
``openai-agents`` extra installed, ``azure.durable_functions`` imports it and MCP with it). The
suite starts a few dozen hosts, so each xdist worker keeps one of these processes: it imports those
libraries once and forks a host per request. Each host is still a separate process that runs
``python -m agentstream_dev.devhost``'s ``main`` with its own environment, working directory and
log, and loads ``function_app`` itself; only the libraries below are shared.

Protocol: one JSON line per host on stdin (``argv``, ``env``, ``cwd``, ``log``), answered by one
line on stdout with the host's process id. Hosts are reaped by the kernel (``SIGCHLD`` ignored
here, restored in each host).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import traceback

# Only libraries that read no setting at import: every host reads its own environment.
import azure.durable_functions  # noqa: F401
import azurefunctions.extensions.http.fastapi  # noqa: F401
import fastapi  # noqa: F401
import httpx  # noqa: F401
import openai  # noqa: F401
import redis.asyncio  # noqa: F401
import uvicorn  # noqa: F401


def _run_host(request: dict) -> None:
    """In the forked child: become the host the request describes, and never return."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        # What the interpreter would have put after the working directory at its start.
        paths = [entry for entry in request["env"].get("PYTHONPATH", "").split(os.pathsep) if entry]
        sys.path[1:1] = paths
        sys.argv = ["agentstream_dev.devhost", *request["argv"]]
        from agentstream_dev.devhost.__main__ import main

        code = main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - the host's own traceback, into its log, as python -m would
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    # A fork copies only the calling thread: a library that started one would leave it behind.
    assert threading.active_count() == 1, "a preloaded library started a thread"
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _run_host(request)
        print(pid, flush=True)


if __name__ == "__main__":
    serve()
