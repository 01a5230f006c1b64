"""``make run``: start what the app needs, then the app.

- Settings come from the environment, then ``local.settings.json`` (``Values``), as ``func`` does.
  ``PORT`` (default 7071) is checked first: a bad value or a port in use stops here, with a message.
- Redis: a private ``redis-server`` on a free port, stopped on exit, unless
  ``REDIS_CONNECTION_STRING`` is set explicitly (in the environment, or in
  ``local.settings.json`` to something other than the example's value); then that Redis is used
  and must answer.
- Model: when none is configured, the offline demo: the scripted model server, and local stand-ins
  for the weather and events services that the tool URL settings point at (said loudly). With a
  model configured, the tools call the real services.
- App: ``func start`` (with Azurite when installed) when Azure Functions Core Tools are on the
  PATH, the development host otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from agentstream.config import ConfigError, ModelSettings, Settings
from agentstream.model_client import COGNITIVE_SERVICES_SCOPE
from agentstream.model_probe import model_status

from .local_redis import start_redis_server
from .tool_standins import tool_settings

# The Functions project is the folder `make run` runs in: it holds function_app.py and host.json.
REPO = Path.cwd()
SCRIPTED_MODEL_NAME = "scripted-travel-planner"
DEFAULT_PORT = 7071
EXAMPLE_SETTINGS = REPO / "local.settings.json.example"


# The whole stop takes at most APP_STOP_SECONDS plus OTHER_STOP_SECONDS per helper: under 5 s.
APP_STOP_SECONDS = 3.5
OTHER_STOP_SECONDS = 0.3
STOPPING = (
    "Stopping the app (its runs end as cancelled or by their lease), then its helpers and Redis."
)
WORKER_PYTHON_SETTING = "languageWorkers__python__defaultExecutablePath"


class LaunchError(RuntimeError):
    """Something ``make run`` needs is not there; the message says what to do."""


def main() -> int:
    # "Press Ctrl-C to stop" holds even when started with SIGINT ignored: a shell without job
    # control starts background jobs so, and Python then keeps the ignore.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN and sys.stdin.isatty():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # `make run` stopped by a signal cleans up like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))
    children = Children()
    cleanup: list[Path] = []
    try:
        if not (REPO / "function_app.py").is_file():
            raise LaunchError("Run this from the project folder (the one with function_app.py).")
        env, explicit = _environment()
        port = _port(env)
        _refuse_port_in_use(port)
        settings = Settings.from_env(env)
        if "REDIS_CONNECTION_STRING" in explicit:
            _check_redis(settings)
        else:
            env["REDIS_CONNECTION_STRING"] = _start_private_redis(children, cleanup)
        if settings.model is None:
            env.update(_start_offline_demo(children))
        else:
            print(model_report(settings.model), flush=True)
        app = _start_app(env, port, children)
        _wait_for_http(f"http://127.0.0.1:{port}/api/health", app, timeout=120)
        if app.poll() is not None:
            raise LaunchError(f"the app exited with {app.returncode}")
        _print_usage(port)
        return app.wait()
    except ConfigError as exc:
        print(f"make run: configuration error: {exc}", file=sys.stderr)
        return 2
    except LaunchError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        _ignore_stop_signals()
        print(f"\n{STOPPING}", flush=True)
        return 130
    finally:
        _ignore_stop_signals()
        children.stop()
        for path in cleanup:
            shutil.rmtree(path, ignore_errors=True)


def _ignore_stop_signals() -> None:
    """A second Ctrl-C (or a SIGTERM) while stopping changes nothing: the stop is bounded."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)


class Children:
    """The processes ``make run`` started, each in a session of its own.

    The terminal's Ctrl-C therefore reaches only the launcher, which stops them in the reverse
    order of their start: the app first, while Redis still answers (so the runs in flight can end
    as cancelled), then the stand-ins, then Redis. Each gets a bounded time before it is killed,
    so the whole stop stays under 5 s.
    """

    def __init__(self) -> None:
        self._started: list[tuple[subprocess.Popen, signal.Signals, float]] = []

    def start(
        self,
        command: list[str],
        *,
        stop_signal: signal.Signals = signal.SIGTERM,
        grace_seconds: float = OTHER_STOP_SECONDS,
        **options: Any,
    ) -> subprocess.Popen:
        process = subprocess.Popen(command, start_new_session=True, **options)
        self.adopt(process, stop_signal=stop_signal, grace_seconds=grace_seconds)
        return process

    def adopt(
        self,
        process: subprocess.Popen,
        *,
        stop_signal: signal.Signals = signal.SIGTERM,
        grace_seconds: float = OTHER_STOP_SECONDS,
    ) -> None:
        self._started.append((process, stop_signal, grace_seconds))

    def stop(self) -> None:
        for process, stop_signal, grace_seconds in reversed(self._started):
            if process.poll() is not None:
                continue
            process.send_signal(stop_signal)
            try:
                process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # its own children too
                process.wait()


def _environment() -> tuple[dict[str, str], set[str]]:
    """The app's settings, and the names of those set on purpose (not example defaults)."""
    env = dict(os.environ)
    explicit = {name for name, value in os.environ.items() if value.strip()}
    example = _values(EXAMPLE_SETTINGS)
    for name, value in _values(REPO / "local.settings.json").items():
        if name not in env:
            env[name] = value
            if value.strip() and value != example.get(name):
                explicit.add(name)
    return env, explicit


def _values(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        values = json.loads(path.read_text()).get("Values", {})
    except (ValueError, AttributeError):
        raise ConfigError(f"{path.name} is not a JSON object with a 'Values' object") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path.name}: 'Values' must be an object")
    return {str(name): str(value) for name, value in values.items()}


def _port(env: dict[str, str]) -> int:
    raw = env.get("PORT", "").strip() or str(DEFAULT_PORT)
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise ConfigError(f"PORT must be a whole number from 1 to 65535, got {raw!r}")
    return int(raw)


def _refuse_port_in_use(port: int) -> None:
    for host in ("127.0.0.1", "0.0.0.0"):
        with socket.socket() as sock:
            # Like the servers themselves: a port still in TIME_WAIT is free to reuse.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise LaunchError(
                        f"port {port} is already in use (another `make run`?); "
                        "stop that, or choose another port: PORT=7072 make run"
                    ) from None
                raise LaunchError(f"cannot listen on port {port}: {exc.strerror}") from None


def _check_redis(settings: Settings) -> None:
    target = settings.redis
    client = redis.Redis(**target.connection_kwargs(), socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise LaunchError(
            f"Redis at {target.host}:{target.port} (REDIS_CONNECTION_STRING) does not answer "
            f"({type(exc).__name__}); start it, or unset REDIS_CONNECTION_STRING and make run "
            "starts its own"
        ) from None
    finally:
        client.close()
    print(f"Redis: using {target.host}:{target.port} (REDIS_CONNECTION_STRING)")


def _start_private_redis(children: Children, cleanup: list[Path]) -> str:
    data_dir = Path(tempfile.mkdtemp(prefix="agentstream-redis-"))
    cleanup.append(data_dir)
    for attempt in range(3):  # another program may take the free port before redis-server does
        port = _free_port()
        try:
            children.adopt(start_redis_server(port, data_dir, own_session=True))
            break
        except RuntimeError as exc:
            if attempt == 2:
                raise LaunchError(str(exc)) from None
    print(f"Redis: started a private redis-server on port {port} (stopped on exit)")
    return f"127.0.0.1:{port}"


def _start_offline_demo(children: Children) -> dict[str, str]:
    """The scripted model and the weather/events stand-ins; the settings that point at them."""
    model_url = _start_server(children, "agentstream_dev.scripted_model", "/scripted/requests")
    standins_url = _start_server(children, "agentstream_dev.tool_standins", "/v1/search?name=x")
    bar = "!" * 90
    print(
        f"""{bar}
  OFFLINE DEMO - NO MODEL CONFIGURED. Answers come from the SCRIPTED MODEL SERVER at
  {model_url}/v1, a deterministic stand-in, not a language model. The weather and
  events tools call LOCAL STAND-INS at {standins_url} that make up their data.
  For a real model set AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_DEPLOYMENT (or OPENAI_BASE_URL,
  OPENAI_API_KEY, OPENAI_MODEL); the tools then call Open-Meteo and Ticketmaster.
{bar}""",
        flush=True,
    )
    return {
        "OPENAI_BASE_URL": f"{model_url}/v1",
        "OPENAI_MODEL": SCRIPTED_MODEL_NAME,
        **tool_settings(standins_url),
    }


def _start_server(children: Children, module: str, probe: str) -> str:
    port = _free_port()
    server = children.start(
        [sys.executable, "-m", module, "--port", str(port)], cwd=REPO, stdout=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    _wait_for_http(f"{url}{probe}", server, timeout=30)
    return url


def _start_app(env: dict[str, str], port: int, children: Children) -> subprocess.Popen:
    func = shutil.which("func", path=env.get("PATH"))
    if func is None:
        print("Azure Functions Core Tools (func) not found: starting the development host.")
        command = [sys.executable, "-m", "agentstream_dev.devhost", "--port", str(port)]
    else:
        local_settings = REPO / "local.settings.json"
        if not local_settings.exists():
            shutil.copy(REPO / "local.settings.json.example", local_settings)
            print("Created local.settings.json from local.settings.json.example")
        _start_azurite(children)
        env.update(worker_python_env(env))
        print(f"Worker Python: {_shown(Path(sys.executable))} ({platform.python_version()})")
        command = [func, "start", "--port", str(port)]
    return children.start(
        command,
        cwd=REPO,
        env=env,
        stop_signal=signal.SIGINT,  # what func and the development host take as Ctrl-C
        grace_seconds=APP_STOP_SECONDS,
    )


def worker_python_env(env: dict[str, str]) -> dict[str, str]:
    """What makes ``func start`` run the worker on this launcher's Python (the project's venv).

    Core Tools start the Python worker with the ``python`` found on ``PATH`` unless
    ``languageWorkers__python__defaultExecutablePath`` names one; both are set, and
    ``VIRTUAL_ENV`` as an activated venv would.
    """
    python = Path(sys.executable)
    return {
        "PATH": os.pathsep.join([str(python.parent), env.get("PATH", os.defpath)]),
        "VIRTUAL_ENV": str(python.parent.parent),
        WORKER_PYTHON_SETTING: str(python),
    }


def _start_azurite(children: Children) -> None:
    azurite = shutil.which("azurite")
    if azurite is None:
        print(
            "Azurite not found (npm install -g azurite); func needs it for AzureWebJobsStorage "
            "unless that setting points at a real storage account."
        )
        return
    location = REPO / ".run" / "azurite"
    location.mkdir(parents=True, exist_ok=True)
    children.start([azurite, "--silent", "--location", str(location)], stdout=subprocess.DEVNULL)
    print("Azurite: started")


def _wait_for_http(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LaunchError(
                f"{' '.join(map(str, process.args[:3]))} exited with {process.returncode}"
            )
        try:
            httpx.get(url, timeout=10)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise LaunchError(f"nothing answered at {url} within {timeout:.0f} s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def model_report(model: ModelSettings, credential: Any | None = None) -> str:
    """One line on the configured model: whether it answers, and what to check when not.

    With Microsoft Entra ID it also signs in once (``credential``, by default
    ``DefaultAzureCredential``), since a model that answers is no use without a token.
    """
    where = f"Azure OpenAI deployment {model.model}" if model.provider == "azure" else model.model
    status = asyncio.run(model_status(model))
    endpoint = "AZURE_OPENAI_ENDPOINT" if model.provider == "azure" else "OPENAI_BASE_URL"
    key = "AZURE_OPENAI_API_KEY" if model.provider == "azure" else "OPENAI_API_KEY"
    if status == "ok":
        if not model.uses_entra_id:
            return f"Model: {where} answers"
        if _signs_in(credential):
            return f"Model: {where} answers; signed in with Microsoft Entra ID"
        return (
            f"Model: {where} answers, but signing in with Microsoft Entra ID failed: "
            f"run az login (or set {key}); runs fail until it works"
        )
    if status.startswith("rejected"):
        hint = f"check {key}, and that it belongs to {endpoint}"
    elif status.startswith("unreachable"):
        hint = f"check {endpoint} and the network; runs will fail until it answers"
    else:
        hint = "the model service is failing; runs may fail until it recovers"
    return f"Model: {where} {status}: {hint}"


def _signs_in(credential: Any | None) -> bool:
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import DefaultAzureCredential

    try:
        (credential or DefaultAzureCredential()).get_token(COGNITIVE_SERVICES_SCOPE)
    except ClientAuthenticationError:
        return False
    return True


def _shown(path: Path) -> Path:
    """``path`` relative to the project when it is inside it, as a user would type it."""
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def _print_usage(port: int) -> None:
    origin = f"http://localhost:{port}"
    chat = _shown(Path(sys.executable).parent / "agentstream-chat")
    url_option = "" if port == DEFAULT_PORT else f" --url {origin}"
    print(
        f"""
Ready.
In a browser:           {origin}/api/ui
Chat in this terminal:  {chat}{url_option}
API:                    {origin}/api/agents/travelplanner/conversations
Health:                 {origin}/api/health
API reference:          {origin}/api/openapi.json
With curl:
  url=$(curl -s -X POST {origin}/api/agents/travelplanner/conversations \\
          -H 'Content-Type: application/json' -d '{{"message": "Plan 3 days in Lisbon"}}' \\
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["stream_url"])')
  curl -N "{origin}$url"                            # Server-Sent Events
  curl -N -H 'Accept: text/plain' "{origin}$url"    # just the text
Press Ctrl-C to stop.
""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
