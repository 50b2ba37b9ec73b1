# The client's exceptions: exactly broker/wire/errors.py (one class per wire code), re-exported so applications
# import errors from the package they use. Owns nothing of its own; must not know sockets or trio.
from millpond.broker.wire.errors import *  # noqa: F401,F403
from millpond.broker.wire.errors import (  # noqa: F401  (names star-import would skip)
    ERRORS,
    EXCEPTIONS,
    ErrorKind,
    MillpondError,
    from_wire,
)
