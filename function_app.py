"""Azure Functions entry point: declares the app's agents and binds the HTTP API. Wiring only.

Every HTTP function uses the FastAPI request/response types of
``azurefunctions.extensions.http.fastapi`` (HTTP streaming needs them app-wide).
"""

import azure.durable_functions as df
import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from agentstream.api import handlers, openapi
from agentstream.api.responses import handlers as responses
from agentstream.config import get_settings
from agentstream.functions import serve_agents
from agentstream.telemetry import configure_telemetry
from agentstream_examples.travel_planner import travel_planner

# Validated once at start-up: a bad setting stops indexing with a message that names it.
settings = get_settings()
# Traces, metrics and logs go where the environment says (docs/operating.md), or nowhere.
configure_telemetry()

app = df.DFApp(http_auth_level=func.AuthLevel[settings.http_auth_level])

CONVERSATIONS = "agents/{agent}/conversations"


@app.route(route=CONVERSATIONS, methods=["POST"])
@app.durable_client_input(client_name="client")
async def start_conversation(req: Request, client) -> Response:
    return await handlers.start_conversation(req, client)


@app.route(route=CONVERSATIONS, methods=["GET"])
async def list_conversations(req: Request) -> Response:
    return await handlers.list_conversations(req)


@app.route(route=CONVERSATIONS + "/{cid}/messages", methods=["POST"])
@app.durable_client_input(client_name="client")
async def post_message(req: Request, client) -> Response:
    return await handlers.post_message(req, client)


@app.route(route=CONVERSATIONS + "/{cid}/stream", methods=["GET"])
async def stream(req: Request) -> Response:
    return await handlers.stream(req)


@app.route(route=CONVERSATIONS + "/{cid}", methods=["GET"])
async def conversation_status(req: Request) -> Response:
    return await handlers.status(req)


@app.route(route=CONVERSATIONS + "/{cid}", methods=["DELETE"])
@app.durable_client_input(client_name="client")
async def delete_conversation(req: Request, client) -> Response:
    return await handlers.delete(req, client)


@app.route(route=CONVERSATIONS + "/{cid}/runs/{run_id}/cancel", methods=["POST"])
async def cancel_run(req: Request) -> Response:
    return await handlers.cancel(req)


@app.route(route="health", methods=["GET"])
async def health(req: Request) -> Response:
    return await handlers.health(req)


@app.route(route="ui", methods=["GET"])
async def ui(req: Request) -> Response:
    return await handlers.page(req)


@app.route(route="openapi.json", methods=["GET"])
async def openapi_document(req: Request) -> Response:
    return await openapi.document(req)


@app.route(route="agents", methods=["GET"])
async def list_agents(req: Request) -> Response:
    return await handlers.list_agents(req)


@app.route(route=CONVERSATIONS + "/{cid}/messages", methods=["GET"])
@app.durable_client_input(client_name="client")
async def conversation_messages(req: Request, client) -> Response:
    return await handlers.conversation_messages(req, client)


# --- OpenAI Responses-compatible surface (base_url=<app>/api/v1) ---------------------------------


@app.route(route="v1/responses", methods=["POST"])
@app.durable_client_input(client_name="client")
async def responses_create(req: Request, client) -> Response:
    return await responses.create(req, client)


@app.route(route="v1/responses/{response_id}", methods=["GET"])
async def responses_retrieve(req: Request) -> Response:
    return await responses.retrieve(req)


@app.route(route="v1/responses/{response_id}/cancel", methods=["POST"])
async def responses_cancel(req: Request) -> Response:
    return await responses.cancel(req)


@app.route(route="v1/models", methods=["GET"])
async def models_list(req: Request) -> Response:
    return await responses.list_models(req)


# The app's agents: one durable entity each, served by every route above.
serve_agents(app, [travel_planner])
