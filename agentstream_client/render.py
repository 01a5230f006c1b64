"""How events look in a terminal."""

from __future__ import annotations

from typing import Any, TextIO

DIM, RESET = "\x1b[2m", "\x1b[0m"
RESULT_PREVIEW_CHARS = 100
# The unfinished word of the answer is held back until it ends, so that a pause (or a note)
# never breaks a word across lines; a "word" longer than this goes out anyway.
MAX_HELD_CHARS = 40


class TerminalRenderer:
    """Writes the assistant's text as it arrives; tool activity dimmed on lines of its own.

    ``notes`` receives everything that is not the assistant's text (tool lines, restarts,
    failures), so a one-shot run can keep stdout to the answer alone.
    """

    def __init__(self, out: TextIO, notes: TextIO | None = None, color: bool = False) -> None:
        self._out = out
        self._notes = notes or out
        self._color = color
        self._at_line_start = True
        self._held = ""  # the answer's unfinished last word

    def show(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message.delta":
            self._text(str(event.get("text", "")))
            return
        self.flush()
        if kind == "tool.call":
            self._note(f"  ↳ {event.get('name')}({event.get('arguments')})", dim=True)
        elif kind == "tool.result":
            result = str(event.get("result", ""))
            if len(result) > RESULT_PREVIEW_CHARS:
                result = result[:RESULT_PREVIEW_CHARS] + "…"
            self._note(f"  ↳ {result}", dim=True)
        elif kind == "run.restarted":
            self._note("[the agent restarted this answer; it starts over below]")
        elif kind == "run.failed":
            self._note(f"[failed: {event.get('message')}]")
        elif kind == "run.cancelled":
            self._note("[cancelled]")
        elif kind == "run.completed":
            self._end_line(self._out)

    def _text(self, delta: str) -> None:
        text = self._held + delta
        cut = max(text.rfind(" "), text.rfind("\n")) + 1
        if len(text) - cut > MAX_HELD_CHARS:
            cut = len(text)
        self._write(self._out, text[:cut])
        self._held = text[cut:]

    def flush(self) -> None:
        """Show the held-back word: nothing more of this answer is coming (for now)."""
        self._write(self._out, self._held)
        self._held = ""

    def note(self, text: str) -> None:
        self._note(text)

    def _note(self, text: str, dim: bool = False) -> None:
        self._end_line(self._notes)
        if dim and self._color:
            text = f"{DIM}{text}{RESET}"
        self._write(self._notes, text + "\n")

    def _end_line(self, stream: TextIO) -> None:
        if not self._at_line_start:
            self._write(stream, "\n")

    def _write(self, stream: TextIO, text: str) -> None:
        if not text:
            return
        stream.write(text)
        stream.flush()
        self._at_line_start = text.endswith("\n")
