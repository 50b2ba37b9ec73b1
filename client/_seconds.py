# Seconds everywhere outside the wire (DESIGN): a keyword that names a time in milliseconds where the API takes
# seconds (`linger_ms` for `linger_s`, as kafka-python and the wire spell it) is refused with the name to use and
# the value converted, instead of Python's bare "unexpected keyword argument". Knows nothing of what the APIs do.
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def check(where: str, seconds: frozenset[str] | set[str], kwargs: dict[str, Any]) -> None:
    """Raise ``TypeError`` if ``kwargs`` has ``x_ms`` where ``x_s`` is in ``seconds`` (naming ``x_s`` and the value in
    seconds)."""
    for key in kwargs:
        if key.endswith("_ms") and key[:-3] + "_s" in seconds:
            new, value = key[:-3] + "_s", kwargs[key]
            shown = f" ({new}={value / 1000:g})" if isinstance(value, (int, float)) and value is not True else ""
            raise TypeError(f"{where}() takes {new!r} in seconds, not {key!r} in milliseconds{shown}")


def require_number(value: Any, what: str) -> None:
    """Raise ``TypeError`` (``what``, then the value) unless ``value`` is an int or a float (a bool is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what}, got {value!r}")


def refuse_ms(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` refusing ``x_ms=`` where it takes ``x_s`` (``TypeError`` naming ``x_s`` and the value in seconds).
    A function without such parameters is returned as it is."""
    seconds = frozenset(p for p in inspect.signature(fn).parameters if p.endswith("_s"))
    if not seconds:
        return fn
    where = fn.__qualname__.replace(".__init__", "")
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def checked_async(*args: Any, **kwargs: Any) -> Any:
            if kwargs:
                check(where, seconds, kwargs)
            return await fn(*args, **kwargs)
        return checked_async  # type: ignore[return-value]

    @functools.wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
        if kwargs:
            check(where, seconds, kwargs)
        return fn(*args, **kwargs)
    return checked


def seconds_api(cls: type[T]) -> type[T]:
    """Class decorator: ``refuse_ms`` on ``__init__`` and every public method."""
    for name, value in list(vars(cls).items()):
        if inspect.isfunction(value) and (name == "__init__" or not name.startswith("_")):
            setattr(cls, name, refuse_ms(value))
    return cls


__all__ = ["check", "refuse_ms", "require_number", "seconds_api"]
