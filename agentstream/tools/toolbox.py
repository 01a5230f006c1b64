"""Tool registry: offers schemas to the model and runs calls without ever raising."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx

from ..config import ToolSettings
from .base import Tool, ToolError
from .local_events import local_events_tool
from .weather import weather_tool

logger = logging.getLogger(__name__)


class Toolbox:
    def __init__(self, tools: list[Tool]) -> None:
        self._tools = {tool.name: tool for tool in tools}

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def schemas(self) -> list[dict[str, Any]]:
        return [tool.schema() for tool in self._tools.values()]

    def call(self, name: str, arguments: str) -> str:
        """Run one tool call and return its result as text for the model.

        Every failure comes back as an ``{"error": ...}`` text the model can read and work around;
        nothing here ends the run.
        """
        tool = self._tools.get(name)
        if tool is None:
            return _error(f"unknown tool {name!r}")
        try:
            parsed = json.loads(arguments or "{}")
        except json.JSONDecodeError:
            return _error("the arguments were not valid JSON")
        if not isinstance(parsed, dict):
            return _error("the arguments must be a JSON object")
        try:
            return json.dumps(tool.run(parsed), ensure_ascii=False)
        except ToolError as exc:
            return _error(str(exc))
        except Exception as exc:  # noqa: BLE001 - a tool failure must never kill the run
            logger.warning("tool %s failed: %s", name, type(exc).__name__)
            return _error(f"{name} failed unexpectedly")


def _error(message: str) -> str:
    return json.dumps({"error": message})


def build_toolbox(settings: ToolSettings, http: httpx.Client | None = None) -> Toolbox:
    """The tools this deployment offers; the events tool only when its API key is set."""
    http = http or httpx.Client(timeout=settings.timeout_seconds, follow_redirects=True)
    tools = [weather_tool(settings, http)]
    if settings.ticketmaster_api_key:
        tools.append(local_events_tool(settings, http))
    return Toolbox(tools)
