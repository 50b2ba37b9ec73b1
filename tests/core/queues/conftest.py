# Fixtures for the queue core tests. No sockets, no sleeps, literal times.
from __future__ import annotations

import sys
from pathlib import Path

# The helpers live in queuekit.py next to this file; make it importable under any pytest import mode.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))
