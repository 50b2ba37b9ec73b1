# Reading fields of a decoded request body with a clear error naming the API, the field and the wrong type.
# Shared by the engine's API modules; knows nothing of any one API.
from __future__ import annotations

from typing import Any

from millpond.broker.wire.errors import InvalidRequestError


def field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], api: str, default: Any = ...) -> Any:
    """``body[name]`` checked to be ``kind`` (bool is never an int); ``default`` when absent (or required when
    not given). Raises ``InvalidRequestError`` naming ``api`` and ``name``."""
    value = body.get(name, default)
    if value is ...:
        raise InvalidRequestError(f"{api}: missing field {name!r}")
    if value is default and default is not ...:
        return value
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise InvalidRequestError(f"{api}: field {name!r} must be {want}, got {type(value).__name__}")
    return value
