"""The chat-completions client, built once per process from the model settings."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import openai

from .config import ModelSettings, Settings, get_settings
from .failures import MODEL_SIGN_IN_FAILED, RunFailure

logger = logging.getLogger(__name__)

COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"


def create_model_client(model: ModelSettings, credential: Any | None = None) -> openai.OpenAI:
    """An ``openai`` client for Azure OpenAI (key or Entra ID) or an OpenAI-compatible server.

    Without a key (``AZURE_OPENAI_API_KEY`` or ``AZURE_OPENAI_KEY``) the Azure client
    authenticates with Microsoft Entra ID: ``DefaultAzureCredential`` (managed identity in Azure,
    the developer's login locally) through :func:`entra_token_provider`.
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
    from azure.identity import DefaultAzureCredential

    token_provider = entra_token_provider(credential or DefaultAzureCredential())
    return {**arguments, "azure_ad_token_provider": token_provider}


def entra_token_provider(credential: Any) -> Callable[[], str]:
    """Bearer tokens for the Cognitive Services scope, refreshed by azure-identity.

    A failed sign-in ends the run as ``model_rejected`` saying what to check, instead of an
    internal error (azure-identity's own text describes the machine; it is not shown).
    """
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import get_bearer_token_provider

    provider = get_bearer_token_provider(credential, COGNITIVE_SERVICES_SCOPE)

    def token() -> str:
        try:
            return provider()
        except ClientAuthenticationError as exc:  # CredentialUnavailableError is one
            logger.warning("model: Microsoft Entra ID sign-in failed (%s)", type(exc).__name__)
            raise RunFailure("model_rejected", MODEL_SIGN_IN_FAILED) from None

    return token


_lock = threading.Lock()
_client: openai.OpenAI | None = None


NOT_CONFIGURED = (
    "No model is configured for this app. Set AZURE_OPENAI_ENDPOINT and "
    "AZURE_OPENAI_DEPLOYMENT, or OPENAI_BASE_URL and OPENAI_MODEL."
)


def configured_model(settings: Settings) -> ModelSettings:
    """The model settings; a run without them ends as ``run.failed`` ``model_not_configured``."""
    if settings.model is None:
        raise RunFailure("model_not_configured", NOT_CONFIGURED)
    return settings.model


def shared_model_client(settings: Settings | None = None) -> tuple[openai.OpenAI, str]:
    """The process-wide client and the model (or deployment) name to call."""
    global _client
    model = configured_model(settings or get_settings())
    with _lock:
        if _client is None:
            _client = create_model_client(model)
        return _client, model.model
