# Fixtures and import path for the fan-out core tests. No sockets, no sleeps, no clock.
from __future__ import annotations

import sys
from pathlib import Path

# The helpers (filterkit.py, reference_filter.py) live next to this file; make them importable under any pytest
# import mode.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))
