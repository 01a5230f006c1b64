"""The README's OpenAI SDK example, run as it is against the development host."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from agentstream_dev.scripted_model.server import create_app as create_model_app

from .devhost_process import REPO, running_devhost
from .standins import scripted_services

_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


@pytest.mark.slow  # an app process of its own and a Python running the example
def test_the_readme_sdk_example_runs_as_it_is(redis_port: int) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in _PYTHON_BLOCK.findall(readme) if "from openai import OpenAI" in b]
    assert len(blocks) == 1
    with (
        scripted_services(create_model_app(), redis_port) as env,
        running_devhost(env) as url,
    ):
        ran = subprocess.run(
            [sys.executable, "-c", blocks[0].replace("http://localhost:7071", url)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert re.fullmatch(r"\[get_weather_forecast: \d+ characters\]", lines[0]), lines[0]
    assert re.fullmatch(r"\[get_local_events: \d+ characters\]", lines[1]), lines[1]
    assert lines[2] == "Here is your 3-day plan for Lisbon, Portugal."
    assert re.fullmatch(r"completed \d+", lines[-3]), lines[-3]
    assert lines[-2] == 'Earlier you asked: "Plan 3 days in Lisbon". I have kept that in mind.'
    assert lines[-1].startswith("To keep Lisbon cheaper:")
