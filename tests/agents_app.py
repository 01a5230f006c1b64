"""The tests' app: ``function_app.py`` plus an agent of each other kind, side by side.

Serve it with ``python -m agentstream_dev.devhost --app tests.agents_app``.
"""

from agentstream.functions import serve_agents
from agentstream_examples.budget import budget_helper
from agentstream_examples.packing import packing_assistant
from function_app import app

serve_agents(app, [packing_assistant, budget_helper])

__all__ = ["app"]
