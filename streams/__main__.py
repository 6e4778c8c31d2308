"""Entry point: ``python -m streams COMMAND``."""

import sys

from streams.cli import main

sys.exit(main())
