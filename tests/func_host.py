"""The real Functions host (``func start``) as a process, for the end-to-end suite in CI.

``AGENTSTREAM_E2E_HOST=func`` runs the end-to-end tests against ``func start`` instead of the
development host; by default nothing changes. The tests still own Redis, the scripted model and
the tool stand-ins, so the host gets the same settings the development host would. It needs Azure
Functions Core Tools on the PATH, Azurite for ``AzureWebJobsStorage`` and a ``local.settings.json``
naming the worker runtime (the GitHub Actions workflow provides all three). Function keys are not
checked by ``func start``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from .devhost_process import REPO, running_devhost, wait_until_serving
from .redis_server import free_port

HOST_SETTING = "AGENTSTREAM_E2E_HOST"


def running_app(env: dict[str, str]) -> AbstractContextManager[str]:
    """The host ``AGENTSTREAM_E2E_HOST`` names (``devhost``, the default, or ``func``)."""
    host = os.environ.get(HOST_SETTING, "devhost")
    if host == "func":
        return running_func_host(env)
    if host != "devhost":
        raise ValueError(f"{HOST_SETTING} must be devhost or func, got {host!r}")
    return running_devhost(env)


@contextmanager
def running_func_host(env: dict[str, str]) -> Iterator[str]:
    """Start ``func start`` in the repository on a free port; yield its base URL."""
    func = shutil.which("func")
    if func is None:
        raise RuntimeError(f"{HOST_SETTING}=func needs Azure Functions Core Tools on the PATH")
    port = free_port()
    process_env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "OPENAI_"))}
    # The worker runs the Python on the PATH: the one running the tests, with the app installed.
    process_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{process_env['PATH']}"
    process_env.update(env)
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.NamedTemporaryFile("w+", prefix="func-", suffix=".log") as log:
        process = subprocess.Popen(
            [func, "start", "--port", str(port)],
            cwd=REPO,
            env=process_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the host's worker processes go down with it
        )
        try:
            # The first start downloads the extension bundle: allow it minutes, not seconds.
            wait_until_serving(base_url, process, Path(log.name), timeout=300, what="func start")
            yield base_url
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
