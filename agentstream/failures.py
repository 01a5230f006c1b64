"""Exceptions that end a run with a specific terminal event.

They carry only text that is safe to show to a client: the code is stable and machine-readable,
the message is written for people and never contains exception text from a library.
"""

from __future__ import annotations


class RunFailure(Exception):
    """End the run with ``run.failed`` carrying this code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# Authentication failures with the model: what to check, naming settings and never their values.
MODEL_CREDENTIALS_REJECTED = (
    "The language model did not accept the app's credentials. Check the model's key "
    "(AZURE_OPENAI_API_KEY or OPENAI_API_KEY), or the app identity's access to the model."
)
MODEL_SIGN_IN_FAILED = (
    "The app could not sign in to the language model with Microsoft Entra ID. Set "
    "AZURE_OPENAI_API_KEY, or sign in (az login locally; in Azure the app's identity needs the "
    "Cognitive Services OpenAI User role)."
)


class RunCancelled(Exception):
    """The run's cancel flag was seen; end it with ``run.cancelled``."""


class RunAlreadyFinished(Exception):
    """The run already has its terminal event; nothing more may be written to it."""
