"""``python -m orchestrator.cli``: the ``ripple`` command without its console script."""

import sys

from orchestrator.cli import main

sys.exit(main())
