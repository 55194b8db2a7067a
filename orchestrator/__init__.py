"""Ripple: a serverless GPU job orchestrator on Ray.

Everything in this package runs without Ray: models and validation, lifecycles, policies, the Redis store,
configuration, the CLI and the client. The Ray actors live in the top-level ``actors`` package; the HTTP
layer is ``orchestrator.api``, composed into the Ray Serve deployment by ``serve_app``.
"""

from __future__ import annotations

__version__ = "0.1.0"
