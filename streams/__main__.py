"""Entry point: ``python -m streams COMMAND``."""

import sys

from streams.ops.cli import main

sys.exit(main())
