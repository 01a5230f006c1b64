"""Typed tools: a plain Python function becomes a tool the model can call.

The JSON schema the model sees comes from the function's signature (types, defaults, ``Literal``,
``Annotated`` descriptions) and its docstring, through pydantic; the arguments the model sends are
validated against the same model before the call, so a bad call becomes a tool error the model can
read, never an exception in the run.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import pydantic
from pydantic_core import to_jsonable_python

from .base import ToolError

_MAX_ERRORS_SHOWN = 5


@dataclass(frozen=True)
class FunctionTool:
    """A tool made from a function; build one with :func:`tool`."""

    name: str
    description: str
    function: Callable[..., Any]
    arguments_model: type[pydantic.BaseModel]
    is_enabled: Callable[[], bool] | None = None

    @property
    def enabled(self) -> bool:
        return self.is_enabled is None or bool(self.is_enabled())

    @property
    def parameters(self) -> dict[str, Any]:
        return self.arguments_model.model_json_schema()

    def schema(self) -> dict[str, Any]:
        """The chat-completions ``tools`` entry."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def validate(self, arguments: str) -> dict[str, Any]:
        """The arguments as keyword arguments, or a :class:`ToolError` that says what is wrong."""
        try:
            parsed = self.arguments_model.model_validate_json(arguments or "{}")
        except pydantic.ValidationError as exc:
            raise ToolError(_describe(exc)) from None
        return {name: getattr(parsed, name) for name in type(parsed).model_fields}

    def invoke(self, arguments: str) -> str:
        """Validate, call (an async function runs to completion here) and encode the result.

        Raises :class:`ToolError` for bad arguments and whatever the function raises.
        """
        result = self.function(**self.validate(arguments))
        if inspect.isawaitable(result):
            result = asyncio.run(_awaited(result))
        return encode_result(result)


def tool(
    function: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    is_enabled: Callable[[], bool] | None = None,
) -> Any:
    """Make ``function`` a tool; usable as ``@tool``, ``@tool(name=...)`` or ``tool(f)``.

    ``description`` defaults to the docstring; ``is_enabled`` decides, per run, whether the model
    is offered the tool (a tool whose service has no key configured, for example).
    """

    def build(fn: Callable[..., Any]) -> FunctionTool:
        return FunctionTool(
            name=name or fn.__name__,
            description=description or inspect.getdoc(fn) or "",
            function=fn,
            arguments_model=_arguments_model(fn),
            is_enabled=is_enabled,
        )

    return build if function is None else build(function)


def as_tool(candidate: FunctionTool | Callable[..., Any]) -> FunctionTool:
    return candidate if isinstance(candidate, FunctionTool) else tool(candidate)


def encode_result(result: Any) -> str:
    """A string result goes to the model as it is; anything else as JSON."""
    if isinstance(result, str):
        return result
    return json.dumps(to_jsonable_python(result), ensure_ascii=False)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _arguments_model(fn: Callable[..., Any]) -> type[pydantic.BaseModel]:
    hints = typing.get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {}
    for parameter in inspect.signature(fn).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(f"tool {fn.__name__}: *args and **kwargs cannot be described")
        annotation = _with_description(hints.get(parameter.name, Any))
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[parameter.name] = (annotation, default)
    return pydantic.create_model(
        f"{fn.__name__}_arguments",
        __config__=pydantic.ConfigDict(extra="forbid"),
        **fields,
    )


def _with_description(annotation: Any) -> Any:
    """``Annotated[str, "a description"]``: a bare string is the parameter's description."""
    if typing.get_origin(annotation) is not Annotated:
        return annotation
    base, *metadata = typing.get_args(annotation)
    converted = [
        pydantic.Field(description=item) if isinstance(item, str) else item for item in metadata
    ]
    return Annotated[base, *converted]


def _describe(exc: pydantic.ValidationError) -> str:
    problems = [
        f"{'.'.join(str(part) for part in error['loc']) or 'arguments'}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False)
    ]
    shown = "; ".join(problems[:_MAX_ERRORS_SHOWN])
    return f"invalid arguments ({shown})"
