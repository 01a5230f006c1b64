"""Reliable streaming for durable agents on Azure Functions.

The package holds everything except the Functions wiring (``function_app.py``): the event model,
the Redis stream log, the agent and its tools, the conversation entity's logic, the HTTP API
handlers, the development host and the scripted model server.
"""
