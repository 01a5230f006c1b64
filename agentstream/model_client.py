"""The chat-completions client, built once per process from the model settings."""

from __future__ import annotations

import threading
from typing import Any

import openai

from .config import ModelSettings, Settings, get_settings
from .failures import RunFailure

COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"


def create_model_client(model: ModelSettings, credential: Any | None = None) -> openai.OpenAI:
    """An ``openai`` client for Azure OpenAI (key or Entra ID) or an OpenAI-compatible server.

    Without ``AZURE_OPENAI_KEY`` the Azure client authenticates with Microsoft Entra ID:
    ``DefaultAzureCredential`` (managed identity in Azure, the developer's login locally) through a
    bearer-token provider for the Cognitive Services scope, refreshed by azure-identity.
    """
    if model.provider == "azure":
        return openai.AzureOpenAI(**_azure_arguments(model, credential))
    return openai.OpenAI(**_openai_arguments(model))


def create_async_model_client(
    model: ModelSettings, credential: Any | None = None
) -> openai.AsyncOpenAI:
    """The same client, async: what the Agent Framework's and the Agents SDK's models take."""
    if model.provider == "azure":
        return openai.AsyncAzureOpenAI(**_azure_arguments(model, credential))
    return openai.AsyncOpenAI(**_openai_arguments(model))


def _common(model: ModelSettings) -> dict[str, Any]:
    return {"timeout": model.timeout_seconds, "max_retries": model.max_retries}


def _openai_arguments(model: ModelSettings) -> dict[str, Any]:
    return {"base_url": model.base_url, "api_key": model.api_key, **_common(model)}


def _azure_arguments(model: ModelSettings, credential: Any | None) -> dict[str, Any]:
    arguments = {
        "azure_endpoint": model.endpoint,
        "api_version": model.api_version,
        **_common(model),
    }
    if model.api_key:
        return {**arguments, "api_key": model.api_key}
    from azure.identity import DefaultAzureCredential, get_bearer_token_provider

    token_provider = get_bearer_token_provider(
        credential or DefaultAzureCredential(), COGNITIVE_SERVICES_SCOPE
    )
    return {**arguments, "azure_ad_token_provider": token_provider}


_lock = threading.Lock()
_client: openai.OpenAI | None = None


def shared_model_client(settings: Settings | None = None) -> tuple[openai.OpenAI, str]:
    """The process-wide client and the model (or deployment) name to call."""
    global _client
    settings = settings or get_settings()
    if settings.model is None:
        raise RunFailure(
            "model_not_configured",
            "No model is configured for this app. Set AZURE_OPENAI_ENDPOINT and "
            "AZURE_OPENAI_DEPLOYMENT, or OPENAI_BASE_URL and OPENAI_MODEL.",
        )
    with _lock:
        if _client is None:
            _client = create_model_client(settings.model)
        return _client, settings.model.model
