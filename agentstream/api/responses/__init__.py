"""The OpenAI Responses-compatible surface under ``/api/v1``."""
