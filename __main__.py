# `python -m millpond ...`: the same command line as `millpond ...` (where the console script is not on PATH).
import sys

from millpond.broker.cli import main

sys.exit(main())
