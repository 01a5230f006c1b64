"""Typed tools: plain functions the model can call, with validated arguments."""

from .base import ToolError
from .function_tool import FunctionTool, tool
from .toolbox import Toolbox

__all__ = ["FunctionTool", "ToolError", "Toolbox", "tool"]
