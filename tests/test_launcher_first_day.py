"""`make run` on the first day: the worker's Python under Core Tools, a prompt and quiet Ctrl-C,
start-up lines that tell the truth."""

from __future__ import annotations

import json
import signal
import stat
import sys
from pathlib import Path

import httpx
import pexpect
import pytest
import redis
from azure.identity import AzureCliCredential

from agentstream.config import Settings
from agentstream.streamlog.keys import stream_key
from agentstream_dev.launcher import STOPPING, model_report
from agentstream_dev.scripted_model.server import create_app as create_model_app

from .api_client import Api
from .devhost_process import REPO
from .redis_server import free_port
from .servers import serve_in_thread
from .test_launcher import launcher

pytestmark = pytest.mark.slow  # `make run`'s launcher and its processes

VENV_PYTHON = Path(sys.executable)

# What Core Tools do by default: start the worker with the `python` found on PATH. The "worker"
# records what it runs on and answers HTTP on the port `func start --port N` was given.
FAKE_FUNC = """#!/bin/sh
exec python "{worker}" "$@"
"""
FAKE_WORKER = """
import http.server, json, os, shutil, signal, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
with open({record!r}, "w") as out:
    json.dump({{
        "argv": sys.argv[1:],
        "prefix": sys.prefix,
        "python_on_path": shutil.which("python"),
        "setting": os.environ.get("languageWorkers__python__defaultExecutablePath"),
        "virtual_env": os.environ.get("VIRTUAL_ENV"),
    }}, out)

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass

signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


def test_func_start_runs_the_worker_on_the_projects_venv_python(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "worker.json"
    worker = tmp_path / "worker.py"
    worker.write_text(FAKE_WORKER.format(record=str(record)))
    func = bin_dir / "func"
    func.write_text(FAKE_FUNC.format(worker=worker))
    func.chmod(func.stat().st_mode | stat.S_IEXEC)
    local_settings = REPO / "local.settings.json"
    had_local_settings = local_settings.exists()
    # No venv on PATH: a system `python`, if any, is what Core Tools would have found.
    path = f"{bin_dir}:/usr/local/bin:/usr/bin:/bin"
    port = free_port()
    try:
        with launcher(PORT=str(port), PATH=path) as child:
            child.expect_exact(f"Worker Python: .venv/bin/python ({sys.version.split()[0]})")
            child.expect_exact("Press Ctrl-C to stop.")
            worker_seen = json.loads(record.read_text())
            child.sendintr()
            child.expect(pexpect.EOF)
    finally:
        if not had_local_settings:
            local_settings.unlink(missing_ok=True)
    venv = REPO / ".venv"
    assert VENV_PYTHON.parent.parent.resolve() == venv.resolve(), "tests run on the .venv"
    assert worker_seen["argv"] == ["start", "--port", str(port)]
    assert Path(worker_seen["prefix"]).resolve() == venv.resolve()
    assert worker_seen["python_on_path"] == str(VENV_PYTHON.parent / "python")
    assert worker_seen["setting"] == str(VENV_PYTHON)
    assert worker_seen["virtual_env"] == str(VENV_PYTHON.parent.parent)


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid``, from /proc (children in sessions of their own included)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("inherited", ["default", "ignored"])
def test_ctrl_c_during_a_run_stops_everything_promptly_quietly_and_ends_the_run(
    redis_port: int, inherited: str
) -> None:
    """Also when started with SIGINT ignored, as a shell without job control starts a background
    job (pytest itself may run so): the launcher has a terminal, and says Ctrl-C stops it."""
    port = free_port()
    ignore = (
        (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if inherited == "ignored" else None
    )
    env = {"PORT": str(port), "REDIS_CONNECTION_STRING": f"127.0.0.1:{redis_port}"}
    with launcher(ignore, **env) as child:
        child.expect_exact("Press Ctrl-C to stop.")
        api = Api(f"http://127.0.0.1:{port}")
        started = api.start("Plan 5 days in Lisbon [[slow]]").json()
        with api.http.stream(
            "GET", started["stream_url"], headers={"Accept": "application/x-ndjson"}
        ) as response:
            for line in response.iter_lines():
                if '"message.delta"' in line:
                    break
        api.http.close()
        started_processes = _descendants(child.pid)
        assert len(started_processes) >= 3  # the app and the scripted model and tool stand-ins
        printed_before = len(child.logfile_read.getvalue())
        child.sendintr()
        child.sendintr()  # a second Ctrl-C while stopping changes nothing
        child.expect(pexpect.EOF, timeout=5)
        after_ctrl_c = child.logfile_read.getvalue()[printed_before:]
        child.close()
    assert child.exitstatus == 130
    # One line, whatever the terminal echoes for the two Ctrl-C; besides it only the app's
    # INFO log (requests answered, the run ended as cancelled), no warning and no error.
    printed = [line for line in after_ctrl_c.replace("^C", "").splitlines() if line.strip()]
    assert [line for line in printed if not line.startswith("INFO ")] == [STOPPING], printed
    assert "Traceback" not in child.logfile_read.getvalue()
    assert not [pid for pid in started_processes if _alive(pid)]

    # The run ended as cancelled, in the stream every reader follows.
    stream = stream_key(started["conversation_id"])
    with redis.Redis(port=redis_port, decode_responses=True) as client:
        last = client.xrevrange(stream, count=1)
    assert last[0][1]["type"] == "run.cancelled"


def test_the_printed_urls_answer() -> None:
    port = free_port()
    with launcher(PORT=str(port)) as child:
        child.expect_exact("Press Ctrl-C to stop.")
        banner = child.before
        urls = [
            word
            for line in banner.splitlines()
            if line.startswith(("In a browser:", "API:", "Health:", "API reference:"))
            for word in line.split()
            if word.startswith("http://")
        ]
        assert len(urls) == 4, banner
        for url in urls:
            if url.endswith("/conversations"):
                answer = httpx.post(url, json={"message": "Hello there"})
                assert answer.status_code == 202, url
            else:
                assert httpx.get(url).status_code == 200, url


def test_an_unreachable_model_is_reported_at_start_with_what_to_check() -> None:
    port, nothing_there = free_port(), free_port()
    settings = {
        "OPENAI_BASE_URL": f"http://127.0.0.1:{nothing_there}/v1",
        "OPENAI_MODEL": "gpt-test",
    }
    with launcher(PORT=str(port), **settings) as child:
        child.expect_exact(
            "Model: gpt-test unreachable (ConnectError): check OPENAI_BASE_URL and the network"
        )
        child.expect_exact("Press Ctrl-C to stop.")
        assert f"127.0.0.1:{nothing_there}" not in child.logfile_read.getvalue()


def test_a_failed_entra_id_sign_in_is_reported_at_start_with_what_to_check() -> None:
    with serve_in_thread(create_model_app()) as model_url:
        settings = Settings.from_env(
            {"AZURE_OPENAI_ENDPOINT": model_url, "AZURE_OPENAI_DEPLOYMENT": "planner"}
        )
        assert settings.model is not None and settings.model.uses_entra_id
        # A real azure-identity credential that cannot sign in here (no Azure CLI login).
        line = model_report(settings.model, credential=AzureCliCredential(process_timeout=5))
    assert line == (
        "Model: Azure OpenAI deployment planner answers, but signing in with Microsoft Entra "
        "ID failed: run az login (or set AZURE_OPENAI_API_KEY); runs fail until it works"
    )
