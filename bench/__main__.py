# `python -m bench`: the same command line as `millpond bench`.
import sys

from bench.cli import main

sys.exit(main())
