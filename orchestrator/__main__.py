"""``python -m orchestrator deploy``: deploy or update Ripple on the Ray cluster this runs in."""

from __future__ import annotations

import sys

from orchestrator.ops.deploy import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
