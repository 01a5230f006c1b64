"""The model's credentials: the SDKs' setting names, and failures that say what to check."""

from __future__ import annotations

from typing import Any

import pytest
from azure.identity import AzureCliCredential

from agentstream.config import ConfigError, Settings
from agentstream.failures import MODEL_CREDENTIALS_REJECTED, MODEL_SIGN_IN_FAILED, RunFailure
from agentstream.model_client import create_model_client

from . import test_agent
from .test_agent import RecordingSink

# The scripted model, the tool stand-ins and the agent factory of the agent's own tests.
model_app = test_agent.model_app
model_url = test_agent.model_url
apis_url = test_agent.apis_url
received = test_agent.received
make_agent = test_agent.make_agent

ENDPOINT = "https://example.openai.azure.com"


def azure(**env: str) -> Settings:
    return Settings.from_env(
        {"AZURE_OPENAI_ENDPOINT": ENDPOINT, "AZURE_OPENAI_DEPLOYMENT": "dep", **env}
    )


def test_the_sdks_names_are_read_and_win_over_the_apps_older_ones() -> None:
    assert azure(AZURE_OPENAI_API_KEY="sdk-key").model.api_key == "sdk-key"
    assert azure(AZURE_OPENAI_KEY="old-key").model.api_key == "old-key"
    both = azure(AZURE_OPENAI_API_KEY="sdk-key", AZURE_OPENAI_KEY="old-key")
    assert both.model.api_key == "sdk-key" and not both.model.uses_entra_id
    assert azure().model.uses_entra_id
    assert azure(OPENAI_API_VERSION="2025-01-01").model.api_version == "2025-01-01"
    version = azure(OPENAI_API_VERSION="2025-01-01", AZURE_OPENAI_API_VERSION="2024-10-21")
    assert version.model.api_version == "2024-10-21"
    with pytest.raises(ConfigError, match="AZURE_OPENAI_API_KEY is set"):
        Settings.from_env({"AZURE_OPENAI_API_KEY": "sdk-key"})


def test_a_model_refusing_the_key_is_model_rejected_with_what_to_check(
    model_url: str, apis_url: str, received: list, make_agent: Any
) -> None:
    agent = make_agent(model_url, apis_url, OPENAI_API_KEY="sk-not-accepted")
    with pytest.raises(RunFailure) as raised:
        agent.run([], "Plan 2 days in Lisbon [[fail-always:401]]", RecordingSink())
    assert raised.value.code == "model_rejected"
    assert raised.value.message == MODEL_CREDENTIALS_REJECTED
    assert "sk-not-accepted" not in raised.value.message
    assert len(received) == 1  # a refused key is not retried


def test_a_failed_entra_id_sign_in_is_model_rejected_not_an_internal_error(
    model_url: str, received: list
) -> None:
    settings = Settings.from_env(
        {"AZURE_OPENAI_ENDPOINT": model_url, "AZURE_OPENAI_DEPLOYMENT": "dep"}
    )
    # A real azure-identity credential that cannot sign in here (no Azure CLI login).
    client = create_model_client(settings.model, credential=AzureCliCredential(process_timeout=5))
    with pytest.raises(RunFailure) as raised:
        client.chat.completions.create(model="dep", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.code == "model_rejected"
    assert raised.value.message == MODEL_SIGN_IN_FAILED
    assert received == [], "nothing reached the model without a token"
