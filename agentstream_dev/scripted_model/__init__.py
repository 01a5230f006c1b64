"""An OpenAI-compatible chat-completions server with a deterministic travel-planner script.

Used by the tests and by ``make run`` when no model is configured. It is not a language model:
it recognises place names, calls the offered tools, and writes a plan from their results.
"""
