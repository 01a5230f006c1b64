"""The error a tool raises to tell the model what went wrong."""

from __future__ import annotations


class ToolError(Exception):
    """A failure whose message is safe to hand back to the model (and to show in the stream)."""
