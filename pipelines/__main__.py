"""``python -m pipelines ...`` = the ``lee`` console script (used as the Ray Job entrypoint)."""

import sys

from pipelines.cli import main

sys.exit(main())
