"""The one limit a worker process reports to its callers as ``503 at_capacity``."""


class AtCapacity(Exception):
    """No connection or stream slot free in this worker right now: ``503`` with ``Retry-After``."""

    retry_after_seconds = 2
