"""Ripple's HTTP layer: one router per resource, dependencies, schemas, error mapping, middleware and the
web UI. The only place that maps errors to status codes."""
