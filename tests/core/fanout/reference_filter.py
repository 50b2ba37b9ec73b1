# A slow, literal reading of the filter policy rules (docs/fanout.md), for the property test that the compiled
# matcher agrees with it. It walks the policy dict on every call and shares no code with the broker; it assumes
# the policy is valid (compile_policy accepted it).
from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

OPERATORS = {"anything-but", "cidr", "equals-ignore-case", "exists", "numeric", "prefix", "suffix"}
DECIMAL = r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?"


def reference_matches(policy: dict, scope: str, headers: list[tuple[str, bytes]], value: bytes) -> bool:
    if policy == {}:
        return True
    if scope == "MessageAttributes":
        def lookup(path: tuple[str, ...]) -> list[Any]:
            found = []
            for name, raw in headers:
                if name == path[0]:
                    try:
                        found.append(raw.decode("utf-8"))
                    except UnicodeDecodeError:
                        pass
            return found
        return object_matches(policy, (), lookup, text=True)

    def no_constants(name: str) -> Any:
        raise ValueError(name)

    try:
        doc = json.loads(value.decode("utf-8"), parse_constant=no_constants)
    except ValueError:
        return False
    if not isinstance(doc, dict):
        return False
    return object_matches(policy, (), lambda path: scalars(doc, path), text=False)


def scalars(item: Any, path: tuple[str, ...]) -> list[Any]:
    """The scalars at ``path`` in ``item``, walking through arrays at every level."""
    if isinstance(item, list):
        return [found for element in item for found in scalars(element, path)]
    if not path:
        return [] if isinstance(item, dict) else [item]
    if isinstance(item, dict) and path[0] in item:
        return scalars(item[path[0]], path[1:])
    return []


def is_or(spec: Any) -> bool:
    return (isinstance(spec, list) and len(spec) >= 2 and all(isinstance(b, dict) for b in spec)
            and all(k not in OPERATORS for b in spec for k in b))


def object_matches(obj: dict, prefix: tuple[str, ...], lookup, text: bool) -> bool:
    for key, spec in obj.items():
        if key == "$or" and is_or(spec):
            if not any(object_matches(branch, prefix, lookup, text) for branch in spec):
                return False
        elif isinstance(spec, dict):
            if not object_matches(spec, prefix + (key,), lookup, text):
                return False
        elif not key_matches(spec, lookup(prefix + (key,)), text):
            return False
    return True


def key_matches(rules: list, values: list, text: bool) -> bool:
    if not values:
        return {"exists": False} in rules
    if {"exists": True} in rules:
        return True
    return any(rule_matches(rule, v, text) for rule in rules for v in values)


def number(v: Any, text: bool) -> float | None:
    if text:
        return float(v) if re.fullmatch(DECIMAL, v) else None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def equals(expected: Any, v: Any, text: bool) -> bool:
    if isinstance(expected, bool) or expected is None:
        return not text and v is expected
    if isinstance(expected, str):
        return isinstance(v, str) and v == expected
    n = number(v, text)
    return n is not None and n == float(expected)


def rule_matches(rule: Any, v: Any, text: bool) -> bool:
    if not isinstance(rule, dict):
        return equals(rule, v, text)
    (op, arg), = rule.items()
    if op == "exists":
        return False  # exists: true was handled by key_matches; exists: false never matches a present key
    if op == "prefix":
        return isinstance(v, str) and v.startswith(arg)
    if op == "suffix":
        return isinstance(v, str) and v.endswith(arg)
    if op == "equals-ignore-case":
        return isinstance(v, str) and v.casefold() == arg.casefold()
    if op == "cidr":
        if not isinstance(v, str):
            return False
        try:
            address = ipaddress.ip_address(v)
        except ValueError:
            return False
        network = ipaddress.ip_network(arg, strict=False)
        return address.version == network.version and address in network
    if op == "numeric":
        n = number(v, text)
        if n is None:
            return False
        for i in range(0, len(arg), 2):
            bound = float(arg[i + 1])
            ok = {"=": n == bound, "<": n < bound, "<=": n <= bound, ">": n > bound, ">=": n >= bound}[arg[i]]
            if not ok:
                return False
        return True
    if op == "anything-but":
        if v is None:
            return False
        if isinstance(arg, dict):
            return not (isinstance(v, str) and v.startswith(arg["prefix"]))
        excluded = arg if isinstance(arg, list) else [arg]
        return not any(equals(x, v, text) for x in excluded)
    raise AssertionError(f"not a valid policy: {rule}")


def branches(policy: dict, prefix: tuple[str, ...] = ()) -> list[list[tuple[tuple[str, ...], list]]]:
    """The policy as an OR of ANDs: each branch a list of (path, value list), "$or" multiplied out."""
    result: list[list[tuple[tuple[str, ...], list]]] = [[]]
    for key, spec in policy.items():
        if key == "$or" and is_or(spec):
            options = [b for branch in spec for b in branches(branch, prefix)]
        elif isinstance(spec, dict):
            options = branches(spec, prefix + (key,))
        else:
            options = [[(prefix + (key,), spec)]]
        result = [mine + theirs for mine in result for theirs in options]
    return result


def combinations(policy: dict) -> int:
    """SNS's complexity: for each branch, the product of each value list's length times its path's depth; the
    branches summed."""
    total = 0
    for branch in branches(policy):
        product = 1
        for path, values in branch:
            product *= len(values) * len(path)
        total += product
    return total


def most_keys(policy: dict) -> int:
    """The most top-level names one branch must match."""
    return max(len({path[0] for path, _ in branch}) for branch in branches(policy))
