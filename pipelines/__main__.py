"""``python -m pipelines ...`` = the ``lee`` console script (used as the Ray Job entrypoint)."""

import sys

from pipelines import cli

sys.exit(cli.main())
