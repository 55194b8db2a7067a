"""The durable store: key names, the Lua scripts rendered from core's tables, the Redis store, the
in-memory fake, and the protocol both implement. The only code that talks to Redis."""
