# `python -m millpond.bench`: the same command line as `millpond bench`.
import sys

from millpond.bench.cli import main

sys.exit(main())
