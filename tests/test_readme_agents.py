"""README "Add your agent": its agent modules, as they are, served beside the app's own agents
and run against the scripted model, which calls each one's tool."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentstream_dev.scripted_model.server import create_app as create_model_app

from .api_client import Api
from .devhost_process import REPO, running_devhost
from .standins import scripted_services

_MODULE_BLOCK = re.compile(r"^```python\n# (\w+)\.py\n(.*?)^```", re.MULTILINE | re.DOTALL)

# What the README's app module does with them (its function_app.py lines), for the test host.
_APP = """
from function_app import app
from agentstream.functions import serve_agents
{imports}
serve_agents(app, [{names}])
"""


def readme_section() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Add your agent")
    return readme[start : readme.index("\n## ", start + 1)]


def test_the_readme_lists_the_agents_of_its_modules() -> None:
    modules = [name for name, _ in _MODULE_BLOCK.findall(readme_section())]
    assert modules == ["weather_buddy", "packer", "budget"]
    assert "serve_agents(app, [travel_planner, weather_buddy, packer, budget])" in readme_section()


@pytest.fixture(scope="module")
def base_url(redis_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory: Path = tmp_path_factory.mktemp("readme-agents")
    blocks = _MODULE_BLOCK.findall(readme_section())
    for module, source in blocks:
        (directory / f"{module}.py").write_text(source, encoding="utf-8")
    names = [module for module, _ in blocks]  # each module's agent has the module's name
    (directory / "readme_app.py").write_text(
        _APP.format(
            imports="\n".join(f"from {name} import {name}" for name in names),
            names=", ".join(names),
        )
    )
    with scripted_services(create_model_app(), redis_port) as env:
        settings = {**env, "PYTHONPATH": str(directory), "MODEL_MAX_RETRIES": "0"}
        with running_devhost(settings, "--app", "readme_app") as url:
            yield url


@pytest.mark.parametrize(
    ("agent", "tool", "says"),
    [
        ("weather-buddy", "get_temperature", "4 °C"),
        ("packer", "packing_list", "shirts and a rain jacket"),
        ("budget", "to_euros", "EUR"),
    ],
)
def test_each_readme_agent_runs_with_its_tool(
    base_url: str, agent: str, tool: str, says: str
) -> None:
    api = Api(base_url, agent)
    started = api.start("How warm is Oslo?")
    assert started.status_code == 202, started.text
    events = api.read_run(started.json()["conversation_id"])
    call = next(e for e in events if e["type"] == "tool.call")
    result = next(e for e in events if e["type"] == "tool.result")
    assert call["name"] == tool
    assert says in result["result"]
    assert events[-1]["type"] == "run.completed"
    api.http.close()


def test_arguments_that_fail_validation_reach_the_model_as_the_readme_says(base_url: str) -> None:
    api = Api(base_url, "weather-buddy")
    started = api.start("How warm is Oslo? [[bad-arguments]]").json()
    events = api.read_run(started["conversation_id"])
    result = next(e for e in events if e["type"] == "tool.result")
    assert result["result"].startswith('{"error": "invalid arguments (')
    assert events[-1]["type"] == "run.completed"
    api.http.close()
