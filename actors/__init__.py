"""Ripple's Ray actors: thin shells that gather state, call the pure logic in ``orchestrator``,
and apply it."""
