"""Start a throwaway local ``redis-server`` (for ``make run``, the tests and the benchmarks)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import redis


def start_redis_server(
    port: int, data_dir: Path, extra_args: Sequence[str] = (), *, own_session: bool = False
) -> subprocess.Popen:
    """Start ``redis-server`` on 127.0.0.1:``port`` without persistence; return once it answers.

    ``extra_args`` are further configuration options; later ones win (``--appendonly yes``).
    ``own_session``: out of the terminal's process group, so Ctrl-C does not reach it and the
    starter stops it when it is no longer needed.
    """
    # REDIS_SERVER_BIN runs everything against another build, e.g. an older Redis.
    binary = os.environ.get("REDIS_SERVER_BIN") or shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (make run / make test install it)")
    data_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data_dir),
            *extra_args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=own_session,
    )
    client = redis.Redis(port=port, socket_connect_timeout=0.2)
    deadline = time.monotonic() + 10
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}")
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                process.terminate()
                raise RuntimeError("redis-server did not start within 10 s") from None
            time.sleep(0.02)  # the server gives no other readiness signal than accepting PING
        finally:
            client.close()
