# The compiled form of a filter policy (filter_policy.py validates and builds it): per key, one closure over
# frozensets, sorted prefix tuples, numeric bounds and networks; per record, the header values or JSON scalars the
# policy names are gathered once and handed to those closures. Pure; must not know the policy's JSON syntax.
from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

Headers = Sequence[tuple[str, bytes | None]]  # bytes-like values (memoryview too); None: no value
Matcher = Callable[[Headers, bytes], bool]

# A header's text is also a number when it is one whole decimal number (the JSON grammar, with a sign and a bare
# leading or trailing point allowed): "10", "-3.5", "3.015e2", ".5". Not "0x10", "1_000", " 1", "inf" or "nan".
# Unambiguous (the digits after a point need the point), so a long text that is no number fails in linear time.
NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


@dataclass(slots=True)
class Rules:
    """One key's value list, sorted by kind; the compiler turns it into a closure."""

    strs: set[str] = field(default_factory=set)
    nums: set[float] = field(default_factory=set)
    true: bool = False
    false: bool = False
    null: bool = False
    prefixes: set[str] = field(default_factory=set)
    suffixes: set[str] = field(default_factory=set)
    folded: set[str] = field(default_factory=set)  # equals-ignore-case, casefolded
    ranges: list[tuple[Callable[[float, float], bool], float, Callable[[float, float], bool], float]] = \
        field(default_factory=list)
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    # anything-but: (excluded strings, excluded numbers, excluded prefix or None), one per anything-but object
    negations: list[tuple[frozenset[str], frozenset[float], str | None]] = field(default_factory=list)
    exists_true: bool = False
    exists_false: bool = False


@dataclass(frozen=True, slots=True)
class Key:
    path: tuple[str, ...]  # the header name, or the property path in the body
    rules: Rules


@dataclass(frozen=True, slots=True)
class Node:
    """A conjunction: every key matches, and in every $or group some branch matches."""

    keys: tuple[Key, ...]
    ors: tuple[tuple[Node, ...], ...]


def all_keys(node: Node) -> list[Key]:
    """Every key of ``node`` and of its $or branches, at any depth."""
    keys = list(node.keys)
    for group in node.ors:
        for sub in group:
            keys.extend(all_keys(sub))
    return keys


def refuse_constant(name: str) -> Any:
    """``json.loads``'s ``parse_constant``: NaN and Infinity are not JSON."""
    raise ValueError(f"{name} is not a JSON number")


def match_all(headers: Headers, value: bytes) -> bool:
    return True


def compile_node(node: Node, text: bool) -> Callable[[dict[Any, list[Any]]], bool]:
    """A function of ``{key: [values]}`` (header name or body path -> the values found, absent keys missing)."""
    tests = tuple((key.path[0] if text else key.path, _key_test(key.rules, text)) for key in node.keys)
    groups = tuple(tuple(compile_node(sub, text) for sub in group) for group in node.ors)

    def node_matches(found: dict[Any, list[Any]]) -> bool:
        get = found.get
        for key, test in tests:
            if not test(get(key)):
                return False
        for group in groups:
            for branch in group:
                if branch(found):
                    break
            else:
                return False
        return True

    return node_matches


def _key_test(rules: Rules, text: bool) -> Callable[[list[Any] | None], bool]:
    exists_false = rules.exists_false
    if rules.exists_true:
        return lambda values: True if values else exists_false
    value_test = _text_test(rules) if text else _json_test(rules)

    def key_matches(values: list[Any] | None) -> bool:
        if not values:
            return exists_false
        for v in values:
            if value_test(v):
                return True
        return False

    return key_matches


def _text_test(r: Rules) -> Callable[[str], bool]:
    """One header value (text) against a key's rules."""
    strs = frozenset(r.strs)
    if not (r.nums or r.prefixes or r.suffixes or r.folded or r.ranges or r.networks or r.negations):
        return strs.__contains__  # the common case: exact strings only
    nums = frozenset(r.nums)
    prefixes, suffixes = tuple(sorted(r.prefixes)), tuple(sorted(r.suffixes))
    folded, ranges, negations = frozenset(r.folded), tuple(r.ranges), tuple(r.negations)
    in_networks = _network_test(r.networks)
    wants_number = bool(nums or ranges or any(neg_nums for _, neg_nums, _ in negations))

    def test(s: str) -> bool:
        if s in strs:
            return True
        if prefixes and s.startswith(prefixes):
            return True
        if suffixes and s.endswith(suffixes):
            return True
        if folded and s.casefold() in folded:
            return True
        if in_networks is not None and in_networks(s):
            return True
        n = float(s) if wants_number and NUMBER.fullmatch(s) else None
        if n is not None:
            if n in nums:
                return True
            for low_op, low, high_op, high in ranges:
                if low_op(n, low) and high_op(n, high):
                    return True
        for neg_strs, neg_nums, neg_prefix in negations:
            if s in neg_strs or (neg_prefix is not None and s.startswith(neg_prefix)):
                continue
            if n is not None and n in neg_nums:
                continue
            return True
        return False

    return test


def _json_test(r: Rules) -> Callable[[Any], bool]:
    """One scalar of the JSON value (str, float, bool or None) against a key's rules."""
    strs, nums, folded = frozenset(r.strs), frozenset(r.nums), frozenset(r.folded)
    prefixes, suffixes = tuple(sorted(r.prefixes)), tuple(sorted(r.suffixes))
    ranges, negations = tuple(r.ranges), tuple(r.negations)
    in_networks = _network_test(r.networks)
    true, false, null = r.true, r.false, r.null

    def test(v: Any) -> bool:
        kind = type(v)
        if kind is str:
            if v in strs:
                return True
            if prefixes and v.startswith(prefixes):
                return True
            if suffixes and v.endswith(suffixes):
                return True
            if folded and v.casefold() in folded:
                return True
            if in_networks is not None and in_networks(v):
                return True
            for neg_strs, _, neg_prefix in negations:
                if not (v in neg_strs or (neg_prefix is not None and v.startswith(neg_prefix))):
                    return True
            return False
        if kind is float:
            if v in nums:
                return True
            for low_op, low, high_op, high in ranges:
                if low_op(v, low) and high_op(v, high):
                    return True
            for _, neg_nums, _ in negations:
                if v not in neg_nums:
                    return True
            return False
        if kind is bool:
            return (true if v else false) or bool(negations)
        return null  # None: only a null in the policy matches it

    return test


def _network_test(networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> Callable[[str], bool] | None:
    """Is a text an IP address in one of ``networks``? IPv4 text is read by hand (``ipaddress`` costs about a
    microsecond a value) with ``ipaddress``'s rules; an address of one IP version is in no network of the other."""
    if not networks:
        return None
    v4 = tuple((int(net.network_address), int(net.netmask)) for net in networks if net.version == 4)
    v6 = tuple(net for net in networks if net.version == 6)

    def test(s: str) -> bool:
        if ":" in s:
            if not v6:
                return False
            try:
                address = ipaddress.IPv6Address(s)
            except ValueError:
                return False
            return any(address in net for net in v6)
        number = _ipv4(s) if v4 else None
        if number is None:
            return False
        for net, mask in v4:
            if number & mask == net:
                return True
        return False

    return test


def _ipv4(s: str) -> int | None:
    """``s`` as an IPv4 address's integer, by ``ipaddress.IPv4Address``'s rules (four decimal octets of at most
    three ASCII digits, 0-255, no leading zero), or None."""
    parts = s.split(".")
    if len(parts) != 4:
        return None
    number = 0
    for part in parts:
        if not (part.isascii() and part.isdigit()) or len(part) > 3 or (part[0] == "0" and len(part) > 1):
            return None
        octet = int(part)
        if octet > 255:
            return None
        number = number << 8 | octet
    return number


def headers_matcher(node: Callable[[dict[Any, list[Any]]], bool], names: frozenset[str]) -> Matcher:
    def matches(headers: Headers, value: bytes) -> bool:
        found: dict[str, list[str]] = {}
        for name, raw in headers:
            if name in names:
                try:
                    text = str(raw, "utf-8")
                except (UnicodeDecodeError, TypeError):
                    continue  # not text: skipped, as SNS skips Binary attributes
                seen = found.get(name)
                if seen is None:
                    found[name] = [text]
                else:
                    seen.append(text)
        return node(found)

    return matches


def body_matcher(node: Callable[[dict[Any, list[Any]]], bool], paths: tuple[tuple[str, ...], ...]) -> Matcher:
    def matches(headers: Headers, value: bytes) -> bool:
        try:
            doc = json.loads(str(value, "utf-8"), parse_int=float, parse_constant=refuse_constant)
        except (ValueError, TypeError, RecursionError):
            return False  # not UTF-8 JSON: SNS expects a JSON object in the body
        if type(doc) is not dict:
            return False
        found = {}
        for path in paths:
            values = _scalars_at(doc, path)
            if values:
                found[path] = values
        return node(found)

    return matches


def _scalars_at(doc: dict[str, Any], path: tuple[str, ...]) -> list[Any]:
    """Every scalar at ``path``: arrays are walked through at every level, objects are not values."""
    nodes: list[Any] = [doc]
    for part in path:
        reached: list[Any] = []
        for item in nodes:
            if type(item) is dict and part in item:
                _flatten(item[part], reached)
        if not reached:
            return reached
        nodes = reached
    return [item for item in nodes if type(item) is not dict]


def _flatten(item: Any, out: list[Any]) -> None:
    """Append ``item``, or the items of ``item`` and its nested lists in order (no recursion: a value may nest as
    deep as the JSON decoder allows)."""
    if type(item) is not list:
        out.append(item)
        return
    stack = [iter(item)]
    while stack:
        for element in stack[-1]:
            if type(element) is list:
                stack.append(iter(element))
                break
            out.append(element)
        else:
            stack.pop()
