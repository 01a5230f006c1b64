"""The development host: serves a Functions app where the Functions host cannot be installed.

It is a stand-in for local development and tests, not the Azure Functions runtime. It reads the
app's own function metadata, serves the HTTP functions with their declared routes and methods,
injects the durable client binding, and runs durable entities with the real SDK handler.
"""
