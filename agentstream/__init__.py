"""Reliable streaming for durable agents on Azure Functions: what runs in Azure.

The Functions wiring is ``function_app.py``; this package holds the event model, the Redis stream
log, the agent registry, our own kind of agent, typed tools and the adapters for other frameworks'
agents, the conversation entity's logic and the HTTP API handlers. An app's own agents (the travel
planner among them) live outside it, in ``agentstream_examples`` here. The development tools
(development host, scripted model, launcher) are ``agentstream_dev`` and the console client is
``agentstream_client``; neither is deployed.
"""

from .logs import quiet_chatty_loggers

quiet_chatty_loggers()
