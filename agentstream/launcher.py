"""``make run``: start what the app needs, then the app.

- Settings come from the environment, then ``local.settings.json`` (``Values``), as ``func`` does.
- Redis: used as configured when reachable; a local ``redis-server`` is started when the
  configured address is on this machine and nothing answers there.
- Model: when none is configured, the scripted model server is started (and says so loudly).
- App: ``func start`` (with Azurite when installed) when Azure Functions Core Tools are on the
  PATH, the development host otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis

from .config import ConfigError, Settings
from .local_redis import start_redis_server

REPO = Path(__file__).resolve().parent.parent
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
SCRIPTED_MODEL_NAME = "scripted-travel-planner"


def main() -> int:
    # `make run` stopped by a signal cleans up like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    env = _environment()
    port = int(env.get("PORT", "7071"))
    children: list[subprocess.Popen] = []
    try:
        settings = Settings.from_env(env)
        _ensure_redis(settings, children)
        if settings.model is None:
            model_url = _start_scripted_model(children)
            env.update(OPENAI_BASE_URL=f"{model_url}/v1", OPENAI_MODEL=SCRIPTED_MODEL_NAME)
        app = _start_app(env, port, children)
        _wait_for_http(f"http://127.0.0.1:{port}/api/health", app, timeout=120)
        _print_usage(port)
        return app.wait()
    except ConfigError as exc:
        print(f"Configuration error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    local_settings = REPO / "local.settings.json"
    if local_settings.exists():
        values = json.loads(local_settings.read_text()).get("Values", {})
        for name, value in values.items():
            env.setdefault(name, str(value))
    return env


def _ensure_redis(settings: Settings, children: list[subprocess.Popen]) -> None:
    target = settings.redis
    client = redis.Redis(**target.connection_kwargs(), socket_connect_timeout=2)
    try:
        client.ping()
        print(f"Redis: using {target.host}:{target.port}")
        return
    except redis.RedisError:
        pass
    if target.host not in LOCAL_HOSTS or target.password or target.ssl:
        raise RuntimeError(f"Redis at {target.host}:{target.port} is not reachable")
    children.append(start_redis_server(target.port, REPO / ".run" / "redis"))
    print(f"Redis: started a local redis-server on port {target.port}")


def _start_scripted_model(children: list[subprocess.Popen]) -> str:
    port = _free_port()
    children.append(
        subprocess.Popen(
            [sys.executable, "-m", "agentstream.scripted_model", "--port", str(port)], cwd=REPO
        )
    )
    url = f"http://127.0.0.1:{port}"
    _wait_for_http(f"{url}/scripted/requests", children[-1], timeout=30)
    bar = "!" * 90
    print(
        f"{bar}\n  NO MODEL CONFIGURED: answers come from the SCRIPTED MODEL SERVER at {url}/v1,\n"
        "  a deterministic stand-in, not a language model. Set AZURE_OPENAI_ENDPOINT and\n"
        "  AZURE_OPENAI_DEPLOYMENT (or OPENAI_BASE_URL, OPENAI_API_KEY, OPENAI_MODEL) for a real"
        f" one.\n{bar}",
        flush=True,
    )
    return url


def _start_app(
    env: dict[str, str], port: int, children: list[subprocess.Popen]
) -> subprocess.Popen:
    func = shutil.which("func")
    if func is None:
        print("Azure Functions Core Tools (func) not found: starting the development host.")
        command = [sys.executable, "-m", "agentstream.devhost", "--port", str(port)]
    else:
        local_settings = REPO / "local.settings.json"
        if not local_settings.exists():
            shutil.copy(REPO / "local.settings.json.example", local_settings)
            print("Created local.settings.json from local.settings.json.example")
        _start_azurite(children)
        command = [func, "start", "--port", str(port)]
    children.append(subprocess.Popen(command, cwd=REPO, env=env))
    return children[-1]


def _start_azurite(children: list[subprocess.Popen]) -> None:
    azurite = shutil.which("azurite")
    if azurite is None:
        print(
            "Azurite not found (npm install -g azurite); func needs it for AzureWebJobsStorage "
            "unless that setting points at a real storage account."
        )
        return
    location = REPO / ".run" / "azurite"
    location.mkdir(parents=True, exist_ok=True)
    children.append(
        subprocess.Popen(
            [azurite, "--silent", "--location", str(location)], stdout=subprocess.DEVNULL
        )
    )
    print("Azurite: started")


def _wait_for_http(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=10)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered at {url} within {timeout:.0f} s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _print_usage(port: int) -> None:
    origin = f"http://localhost:{port}"
    print(
        f"""
Ready: {origin}/api  (health: curl {origin}/api/health)
Try it:
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
