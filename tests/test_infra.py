"""The azd template (azure.yaml, infra/, host.json) held against the app it deploys.

The tests neither compile the Bicep nor run azd, so the template is checked statically: its app
settings against the settings the code reads, its production values through the app's own
validation, checkov over infra/ and actionlint over the workflow.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from agentstream.config import Settings

REPO = Path(__file__).resolve().parent.parent
INFRA = REPO / "infra"
FUNCTION_APP_BICEP = INFRA / "modules" / "function-app.bicep"
INFRA_TOOLS = REPO / ".venv-infra" / "bin"

# Settings the app reads that the template leaves unset on purpose, and why.
LEFT_AT_DEFAULT = {
    "AZURE_OPENAI_KEY": "the app uses Entra ID; the Azure OpenAI account has key auth disabled",
    "AZURE_OPENAI_API_KEY": "the app uses Entra ID; the Azure OpenAI account has key auth disabled",
    "OPENAI_API_VERSION": "AZURE_OPENAI_API_VERSION is set (it wins)",
    "OPENAI_BASE_URL": "Azure OpenAI is the model; an OpenAI-compatible server is the alternative",
    "OPENAI_API_KEY": "Azure OpenAI is the model; an OpenAI-compatible server is the alternative",
    "OPENAI_MODEL": "Azure OpenAI is the model; an OpenAI-compatible server is the alternative",
    "TICKETMASTER_API_KEY": "a secret: add it as a Key Vault reference to turn the events tool on",
    "AUTH_ENTRA_ISSUER": "derived from AUTH_ENTRA_TENANT_ID (the tenant's v2.0 issuer)",
    "AUTH_ENTRA_JWKS_URL": "derived from AUTH_ENTRA_TENANT_ID (the tenant's published keys)",
    "WEBSITE_AUTH_ENABLED": "App Service sets it when Authentication is turned on for the app",
    "REDIS_MIN_REPLICAS": "1 when the server reports a replica: what highAvailability gives",
    "REDIS_REPLICA_WAIT_MS": "the default bounds a write's wait when no replica answers",
}

# What the Functions host, the Python worker and azure-identity read (not config.py).
PLATFORM_NAMES = {
    "AZURE_CLIENT_ID",
    "PYTHON_ENABLE_INIT_INDEXING",
    "PYTHON_THREADPOOL_THREAD_COUNT",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "DURABLE_TASK_SCHEDULER_CONNECTION_STRING",
}
PLATFORM_PREFIXES = ("AzureWebJobsStorage__", "AzureFunctionsJobHost__")
# Flex Consumption takes the runtime from functionAppConfig: these app settings are deprecated.
FLEX_DEPRECATED = {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION"}

_READER_METHODS = {"text", "flag", "integer", "number", "url", "get", "getenv"}
_SETTING_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_SECRET_NAME = re.compile(r"KEY|PASSWORD|SECRET|TOKEN")
_CREDENTIAL_IN_VALUE = re.compile(
    r"password=|accountkey=|sharedaccesskey|sig=|//[^/@'\s]+:[^/@'\s]+@", re.IGNORECASE
)


def settings_the_app_reads() -> set[str]:
    """Names passed as literals to the settings reader or to an environment lookup in config.py."""
    tree = ast.parse((REPO / "agentstream" / "config.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        func = node.func
        method = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        first = node.args[0]
        if (
            method in _READER_METHODS
            and isinstance(first, ast.Constant)
            and isinstance(first.value, str)
            and _SETTING_NAME.match(first.value)
        ):
            names.add(first.value)
    return names


def bicep_settings(path: Path = FUNCTION_APP_BICEP) -> dict[str, dict[str, str]]:
    """Each ``var <x>Settings = ... {`` object of a Bicep file: its top-level keys and values."""
    blocks = {}
    pattern = re.compile(r"^var (\w+Settings) = [^\n]*\{\n(.*?)\n\}", re.MULTILINE | re.DOTALL)
    for match in pattern.finditer(path.read_text()):
        entries = {}
        for line in match.group(2).splitlines():
            entry = re.match(r"^  (\w+): (.+)$", line)
            if entry:
                entries[entry.group(1)] = entry.group(2).strip()
        blocks[match.group(1)] = entries
    return blocks


def all_infra_settings() -> dict[str, str]:
    merged: dict[str, str] = {}
    for block in bicep_settings().values():
        merged.update(block)
    return merged


def plain_secrets(settings: dict[str, str]) -> list[str]:
    """Settings that hold a secret as a plain value rather than a Key Vault reference."""
    found = []
    for name, value in settings.items():
        keyvault = value.startswith("'@Microsoft.KeyVault(")
        if (_SECRET_NAME.search(name) and not keyvault) or _CREDENTIAL_IN_VALUE.search(value):
            found.append(name)
    return found


def bicep_param_default(name: str, path: Path = INFRA / "main.bicep") -> str:
    match = re.search(rf"^param {name} \w+ = (.+)$", path.read_text(), re.MULTILINE)
    assert match, f"main.bicep has no param {name} with a default"
    return match.group(1).strip().strip("'")


# --- settings ---------------------------------------------------------------------------------


def test_the_scan_finds_the_settings_config_py_reads() -> None:
    names = settings_the_app_reads()
    # A few that every version of config.py reads, so a broken scan cannot pass as "nothing".
    assert {"REDIS_CONNECTION_STRING", "STREAM_MAX_SECONDS", "AZURE_OPENAI_ENDPOINT"} <= names
    assert len(names) >= 25


def test_every_setting_the_app_reads_is_deployed_or_left_at_default_on_purpose() -> None:
    deployed = set(bicep_settings()["appSettings"])
    missing = settings_the_app_reads() - deployed - set(LEFT_AT_DEFAULT)
    assert not missing, f"add to appSettings in {FUNCTION_APP_BICEP.name} (or LEFT_AT_DEFAULT)"


def test_infra_sets_no_setting_the_app_does_not_read() -> None:
    app = settings_the_app_reads()
    deployed = set(bicep_settings()["appSettings"])
    assert not (deployed - app), "unknown settings in appSettings"
    assert set(LEFT_AT_DEFAULT) <= app, "LEFT_AT_DEFAULT names a setting config.py does not read"
    assert not (set(LEFT_AT_DEFAULT) & deployed), "a setting is both deployed and left at default"


def test_platform_settings_are_ones_the_host_or_libraries_read() -> None:
    blocks = bicep_settings()
    assert set(blocks) == {"appSettings", "platformSettings", "schedulerSettings"}
    for block in ("platformSettings", "schedulerSettings"):
        for name in blocks[block]:
            assert name in PLATFORM_NAMES or name.startswith(PLATFORM_PREFIXES), name
    assert not (FLEX_DEPRECATED & set(all_infra_settings()))


def test_secrets_are_never_plain_values() -> None:
    assert plain_secrets(all_infra_settings()) == []
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert not [name for name in parameters if _SECRET_NAME.search(name.upper())]


@pytest.mark.parametrize(
    "settings",
    [
        {"AZURE_OPENAI_KEY": "'sk-123'"},
        {"TICKETMASTER_API_KEY": "ticketmasterKey"},
        {"REDIS_CONNECTION_STRING": "'${host}:6380,password=${key},ssl=True'"},
        {"REDIS_CONNECTION_STRING": "'rediss://default:${key}@${host}:10000'"},
    ],
)
def test_the_secret_check_catches_plain_secrets(settings: dict[str, str]) -> None:
    assert plain_secrets(settings) == list(settings)


# Stand-ins for the values Bicep computes at deployment time.
_DEPLOY_TIME = {
    "identityPrincipalId": "00000000-0000-0000-0000-000000000001",
    "openAiEndpoint": "https://oai-example.openai.azure.com/",
    "openAiDeploymentName": "gpt-4o-mini",
    "redisHost": "redis-example.westeurope.redis.azure.net",
    "redisPort": "10000",
    "redisCluster": "true",
    "authMode": "key",
    "authTenantId": "00000000-0000-0000-0000-0000000000aa",
    "authAudience": "",
}


def _deployed_value(expression: str) -> str:
    if expression in _DEPLOY_TIME:
        return _DEPLOY_TIME[expression]
    assert expression.startswith("'") and expression.endswith("'"), expression
    return re.sub(r"\$\{(\w+)\}", lambda m: _DEPLOY_TIME[m.group(1)], expression[1:-1])


def test_the_production_values_pass_the_apps_own_validation() -> None:
    env = {name: _deployed_value(value) for name, value in bicep_settings()["appSettings"].items()}
    settings = Settings.from_env(env)
    assert settings.http_auth_level == "FUNCTION"
    assert settings.max_stream_seconds < 230  # the platform cuts HTTP responses at 230 s
    assert settings.redis.ssl and settings.redis.use_entra_id and settings.redis.password is None
    assert settings.redis.port == 10000
    assert settings.model is not None and settings.model.uses_entra_id


# --- host.json and concurrency ----------------------------------------------------------------


def _host_json() -> dict:
    return json.loads((REPO / "host.json").read_text())


def test_entity_concurrency_matches_the_worker_thread_pool() -> None:
    durable = _host_json()["extensions"]["durableTask"]
    runs = int(bicep_param_default("concurrentRunsPerWorker"))
    # Azure Storage backend: each entity batch takes an orchestrator slot and holds one thread.
    assert durable["maxConcurrentOrchestratorFunctions"] == runs
    platform = bicep_settings()["platformSettings"]
    assert platform["PYTHON_THREADPOOL_THREAD_COUNT"] == "string(concurrentRunsPerWorker)"
    override = "AzureFunctionsJobHost__extensions__durableTask__maxConcurrentOrchestratorFunctions"
    assert platform[override] == "string(concurrentRunsPerWorker)"
    # One operation per batch: the function timeout then bounds one run, not a queue of them.
    assert durable["maxEntityOperationBatchSize"] == 1


def test_the_function_timeout_outlasts_the_timeouts_of_a_run() -> None:
    """A run makes at most MAX_TOOL_ROUNDS + 1 model calls, each retried MODEL_MAX_RETRIES times."""
    values = {k: _deployed_value(v) for k, v in bicep_settings()["appSettings"].items()}
    calls = int(values["MAX_TOOL_ROUNDS"]) + 1
    model = calls * (int(values["MODEL_MAX_RETRIES"]) + 1) * float(values["MODEL_TIMEOUT_SECONDS"])
    tools = int(values["MAX_TOOL_ROUNDS"]) * 2 * float(values["TOOL_TIMEOUT_SECONDS"])
    hours, minutes, seconds = (int(part) for part in _host_json()["functionTimeout"].split(":"))
    timeout = timedelta(hours=hours, minutes=minutes, seconds=seconds).total_seconds()
    assert timeout > model + tools


def test_the_scheduler_option_switches_the_storage_provider_of_the_same_host_json() -> None:
    durable = _host_json()["extensions"]["durableTask"]
    assert durable["storageProvider"]["type"] == "AzureStorage"
    scheduler = bicep_settings()["schedulerSettings"]
    prefix = "AzureFunctionsJobHost__extensions__durableTask__storageProvider__"
    assert scheduler[prefix + "type"] == "'azureManaged'"
    connection = scheduler[prefix + "connectionStringName"].strip("'")
    assert "Authentication=ManagedIdentity" in scheduler[connection]
    # The task hub the scheduler module creates carries host.json's hubName.
    main = (INFRA / "main.bicep").read_text()
    assert f"taskHubName: '{durable['hubName']}'" in main


# --- azd conventions --------------------------------------------------------------------------


def test_azure_yaml_points_its_service_at_the_function_app() -> None:
    config = yaml.safe_load((REPO / "azure.yaml").read_text())
    assert config["name"] == "agentstream"
    ((service_name, service),) = config["services"].items()
    assert service["host"] == "function"
    assert service["language"] == "python"
    project = (REPO / service["project"]).resolve()
    assert project == REPO
    for needed in ("function_app.py", "host.json", "requirements.txt"):
        assert (project / needed).is_file()
    # azd finds the app to deploy to by this tag.
    assert f"'azd-service-name': '{service_name}'" in FUNCTION_APP_BICEP.read_text()


def test_main_bicep_follows_the_azd_conventions() -> None:
    main = (INFRA / "main.bicep").read_text()
    assert re.search(r"^targetScope = 'subscription'$", main, re.MULTILINE)
    assert "resource rg 'Microsoft.Resources/resourceGroups@" in main
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert parameters["location"]["value"] == "${AZURE_LOCATION}"
    declared = set(re.findall(r"^param (\w+) ", main, re.MULTILINE))
    assert set(parameters) <= declared
    outputs = set(re.findall(r"^output (\w+) ", main, re.MULTILINE))
    assert {"AZURE_LOCATION", "AZURE_FUNCTION_APP_NAME", "AGENTSTREAM_URL"} <= outputs
    for module in re.findall(r"^module \w+ '([^']+)'", main, re.MULTILINE):
        assert (INFRA / module).is_file(), module


def test_the_function_app_runs_on_flex_consumption_with_a_supported_python() -> None:
    bicep = FUNCTION_APP_BICEP.read_text()
    assert "name: 'FC1'" in bicep and "tier: 'FlexConsumption'" in bicep
    assert "type: 'UserAssigned'" in bicep
    # The versions the app supports (requirements.txt allows 3.11 to 3.13).
    assert bicep_param_default("pythonVersion") in {"3.11", "3.12", "3.13"}


# --- static checkers --------------------------------------------------------------------------


def _tool(name: str) -> Path:
    path = INFRA_TOOLS / name
    if not path.exists():
        pytest.skip(f"{path} is missing: `make test` (or `make infra-tools`) installs it")
    return path


def test_checkov_finds_no_failed_check_in_infra() -> None:
    result = subprocess.run(
        [
            str(_tool("checkov")),
            "--directory",
            str(INFRA),
            "--framework",
            "bicep",
            "--skip-download",  # no calls to the vendor's API: the checks ship with the package
            "--output",
            "json",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert failed == [] and summary["failed"] == 0
    assert summary["passed"] > 0 and summary["parsing_errors"] == 0
    assert result.returncode == 0


def test_every_checkov_skip_says_why() -> None:
    skips = []
    for path in INFRA.rglob("*.bicep"):
        skips += re.findall(r"checkov:skip=(\S+?)(?::(.*))?$", path.read_text(), re.MULTILINE)
    assert skips
    for check, reason in skips:
        assert len(reason.strip()) > 20, f"{check} is skipped without a reason"


def test_the_workflow_passes_actionlint() -> None:
    workflows = sorted((REPO / ".github" / "workflows").glob("*.yml"))
    assert workflows
    result = subprocess.run(
        [str(_tool("actionlint")), "-no-color", *map(str, workflows)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
