import sys

from millpond.broker.cli import main

sys.exit(main())
