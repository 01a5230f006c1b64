"""The Responses-compatible surface with the oldest ``openai`` the project supports.

The lower bound of the ``openai`` range in ``pyproject.toml`` is installed into a venv
of its own (``.venv-openai-<version>``, made once and kept), and the same scenario the newest SDK
runs (``responses_sdk_scenario.py``) runs there, against the development host.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import redis
from packaging.version import Version

from agentstream_dev.scripted_model.server import create_app as create_model_app

from .devhost_process import REPO, running_devhost
from .standins import scripted_services
from .test_responses_api import restarted_response

pytestmark = pytest.mark.slow

_LOWER_BOUND = re.compile(r"""^\s*"?openai(?:\[[^\]]*\])?\s*>=\s*([0-9][0-9.]*)""", re.MULTILINE)


def oldest_supported_openai() -> str:
    """The lower bound of the runtime ``openai>=X`` range in ``pyproject.toml``."""
    found = _LOWER_BOUND.search((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert found, "no openai>=… range in pyproject.toml"
    return found.group(1)


@pytest.fixture(scope="module")
def oldest_sdk_python() -> Path:
    version = oldest_supported_openai()
    venv = REPO / f".venv-openai-{version}"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        # httpx for the scenario's own requests: openai 3 sends through httpx2, without httpx.
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"openai=={version}", "httpx"],
            check=True,
            timeout=300,
        )
    installed = subprocess.run(
        [str(python), "-c", "import openai; print(openai.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Version(installed) == Version(version)
    return python


@pytest.fixture(scope="module")
def base_url(redis_port: int) -> Iterator[str]:
    model = create_model_app(delay_seconds=0.002)
    with scripted_services(model, redis_port) as env, running_devhost(env) as url:
        yield url


def test_the_sdk_scenario_with_the_oldest_supported_sdk(
    oldest_sdk_python: Path, base_url: str, redis_port: int
) -> None:
    with (
        openai.OpenAI(base_url=f"{base_url}/api/v1", api_key="unused") as newest,
        redis.Redis(port=redis_port, decode_responses=True) as sync,
    ):
        restarted = restarted_response(base_url, newest, sync)
    arguments = {"base_url": base_url, "stored_ids": [restarted], "cuts": 60}
    ran = subprocess.run(
        [str(oldest_sdk_python), "tests/responses_sdk_scenario.py", json.dumps(arguments)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "every check passed" in ran.stdout
