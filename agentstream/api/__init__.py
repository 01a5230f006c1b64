"""The HTTP API: request parsing, validation, handlers and error responses."""
