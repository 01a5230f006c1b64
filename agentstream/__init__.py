"""Reliable streaming for durable agents on Azure Functions: what runs in Azure.

The Functions wiring is ``function_app.py``; this package holds the event model, the Redis stream
log, the agent and its tools, the conversation entity's logic and the HTTP API handlers. The
development tools (development host, scripted model, launcher) are ``agentstream_dev`` and the
console client is ``agentstream_client``; neither is deployed.
"""

from .logs import quiet_chatty_loggers

quiet_chatty_loggers()
