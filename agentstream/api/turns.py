"""A conversation's history (chat-completions messages) as turns a client can show."""

from __future__ import annotations

from typing import Any

Message = dict[str, Any]


def history_of(entity_state: Any) -> list[Message]:
    """The history in an entity's state (``{"history": [...], "runs": {...}}``)."""
    if isinstance(entity_state, dict) and isinstance(entity_state.get("history"), list):
        return [m for m in entity_state["history"] if isinstance(m, dict)]
    return []


def runs_in_state(entity_state: Any, finished: frozenset[str]) -> set[str]:
    """The runs whose turns an entity's state already holds (its finished run records)."""
    runs = entity_state.get("runs") if isinstance(entity_state, dict) else None
    if not isinstance(runs, dict):
        return set()
    return {
        run
        for run, record in runs.items()
        if isinstance(record, dict) and record.get("status") in finished
    }


def turns_of(history: list[Message]) -> list[dict[str, Any]]:
    """One entry per user message: its text, the assistant's text, and the tool calls of the
    turn with their results, in order. Numbered from the oldest turn the history keeps."""
    results = {m.get("tool_call_id"): m.get("content") for m in history if m.get("role") == "tool"}
    turns: list[dict[str, Any]] = []
    for message in history:
        role = message.get("role")
        if role == "user":
            turns.append(
                {"turn": len(turns), "user": _text(message), "assistant": "", "tool_calls": []}
            )
        elif role == "assistant" and turns:
            turn = turns[-1]
            turn["assistant"] += _text(message)
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                turn["tool_calls"].append(
                    {
                        "call_id": call.get("id"),
                        "name": function.get("name"),
                        "arguments": function.get("arguments"),
                        "result": results.get(call.get("id")),
                    }
                )
    return turns


def _text(message: Message) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""
