"""The tools one run offers: their schemas for the model, and calls that never raise."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from .. import telemetry
from .base import ToolError
from .function_tool import FunctionTool

logger = logging.getLogger(__name__)


class Toolbox:
    def __init__(self, tools: Iterable[FunctionTool]) -> None:
        self._tools = {tool.name: tool for tool in tools}

    @classmethod
    def enabled(cls, tools: Iterable[FunctionTool]) -> Toolbox:
        """The tools whose ``is_enabled`` says yes now."""
        return cls(tool for tool in tools if tool.enabled)

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def schemas(self) -> list[dict[str, Any]]:
        return [tool.schema() for tool in self._tools.values()]

    def call(self, name: str, arguments: str) -> str:
        """Run one tool call and return its result as text for the model.

        Every failure (unknown tool, arguments that fail validation, a tool that raises) comes
        back as an ``{"error": ...}`` text the model can read and work around; nothing here ends
        the run.
        """
        tool = self._tools.get(name)
        if tool is None:
            return tool_error(f"unknown tool {name!r}")
        try:
            with telemetry.tool_span(name):
                return tool.invoke(arguments)
        except ToolError as exc:
            return tool_error(str(exc))
        except Exception as exc:  # noqa: BLE001 - a tool failure must never kill the run
            logger.warning("tool %s failed: %s", name, type(exc).__name__)
            return tool_error(f"{name} failed unexpectedly")


def tool_error(message: str) -> str:
    return json.dumps({"error": message})
