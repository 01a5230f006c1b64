"""Serves the app's agents: one durable entity per agent (entity name = agent name), and the
catch-all HTTP function that answers requests no route takes in the API's JSON."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import azure.durable_functions as df
import azure.functions as func
from azure.functions.decorators.http import HttpTrigger
from fastapi import Request, Response

from . import conversation
from .agents.base import AgentDefinition
from .agents.registry import InvalidAgents, app_registry
from .api import unrouted
from .api.observed import observed

# The Functions host tries the HTTP routes in the order of their functions' names, compared
# without regard to case, and takes the first whose template and method match (a later host may
# order them by specificity instead: a catch-all comes last there too). Names start with a letter
# and then take letters, digits, "_" and "-": upper-cased, "_" sorts after every letter, so this
# name comes after every name that does not itself start with "z_".
UNROUTED_FUNCTION = "z_unrouted"
UNROUTED_ROUTE = "{*path}"
UNROUTED_PARAMETER = "path"


def serve_agents(app: df.DFApp, agents: Sequence[AgentDefinition]) -> None:
    """Check the agents' names, register an entity function for each, and add them to the agents
    the HTTP routes know; the first call also registers the catch-all HTTP function. Raises
    :class:`InvalidAgents` at start-up for a bad declaration (a bad or repeated name, also across
    calls)."""
    if not agents:
        raise InvalidAgents("declare at least one agent")
    app_registry().add(agents)
    for agent in agents:
        # A name another function already has is refused by azure-functions at indexing.
        app.entity_trigger(context_name="context", entity_name=agent.info.name)(
            _entity_function(agent)
        )
    if not _has_function(app, UNROUTED_FUNCTION):
        _serve_unrouted(app)


def _entity_function(agent: AgentDefinition) -> Callable[[df.DurableEntityContext], None]:
    def entity(context: df.DurableEntityContext) -> None:
        conversation.handle_operation(context, agent)

    # The function's name is the Functions function name: the agent's, as the entity's.
    entity.__name__ = entity.__qualname__ = agent.info.name
    return entity


def _declared_functions(app: func.FunctionRegister) -> list[func.Function]:
    """The functions declared so far. ``get_functions()`` is the host's (the worker's) to call:
    it records every name and refuses them all on a second call, so the builders are read."""
    return [builder.build(app.auth_level) for builder in app._function_builders]


def _has_function(app: df.DFApp, name: str) -> bool:
    return any(function.get_function_name() == name for function in _declared_functions(app))


def _serve_unrouted(app: df.DFApp) -> None:
    """``{*path}``, every method: ``404 not_found`` or ``405 method_not_allowed`` as JSON."""

    @functools.cache
    def routes() -> unrouted.RouteTable:
        # Read at the first such request: every route is declared by then.
        return route_table(app)

    # Observed as the other routes: a span and a log line, whose route is the template
    # (/api/{path}), never the path sent.
    @observed
    async def answer(req: Request) -> Response:
        path = str(req.path_params.get(UNROUTED_PARAMETER) or "")
        return unrouted.unrouted(routes(), req.method, path, req.url.path)

    # The FastAPI types, as every HTTP function of the app (the extension's are these); the
    # host binds the request by the parameter's name.
    async def unrouted_request(req: Request) -> Response:
        return await answer(req)

    app.function_name(UNROUTED_FUNCTION)(app.route(route=UNROUTED_ROUTE)(unrouted_request))


def route_table(app: func.FunctionRegister) -> unrouted.RouteTable:
    """The app's HTTP routes but the catch-all's."""
    routes = []
    for function in _declared_functions(app):
        trigger, name = function.get_trigger(), function.get_function_name()
        if not isinstance(trigger, HttpTrigger) or name == UNROUTED_FUNCTION:
            continue
        template = trigger.route or name or ""  # no route: the function's name, as the host
        methods = [str(getattr(m, "value", m)).upper() for m in trigger.methods or ()]
        routes.append(
            unrouted.Route(unrouted.RouteTemplate.parse(template), frozenset(methods) or None)
        )
    return unrouted.RouteTable(routes)
