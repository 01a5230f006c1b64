"""The console client: an interactive chat and a pipe-friendly one-shot mode."""
