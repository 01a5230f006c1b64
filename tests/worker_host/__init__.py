"""A minimal Functions host that runs the app under the real Python worker library."""
