"""The browser client, served by the app at ``/api/ui``."""
