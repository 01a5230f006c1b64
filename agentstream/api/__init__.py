"""The HTTP API of DESIGN.md 3: request parsing, validation, handlers and error responses."""
