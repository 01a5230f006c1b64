"""The Redis Streams log: Lua scripts and protocol constants, the run writer, readers, the hub."""
