"""The travel planner's tools: JSON schemas the model sees and the code that runs them."""

from .base import Tool
from .toolbox import Toolbox, build_toolbox

__all__ = ["Tool", "Toolbox", "build_toolbox"]
