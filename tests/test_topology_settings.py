"""``REDIS_CLUSTER`` and the other Redis topology settings."""

from __future__ import annotations

import pytest

from agentstream.config import ConfigError, Settings


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, "auto"), ("auto", "auto"), ("AUTO", "auto"), ("true", "true"), ("no", "false")],
)
def test_redis_cluster_accepts_auto_true_and_false(raw: str | None, expected: str) -> None:
    env = {} if raw is None else {"REDIS_CLUSTER": raw}
    assert Settings.from_env(env).topology.cluster == expected


def test_an_unknown_redis_cluster_value_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="REDIS_CLUSTER must be auto, true or false"):
        Settings.from_env({"REDIS_CLUSTER": "sometimes"})
