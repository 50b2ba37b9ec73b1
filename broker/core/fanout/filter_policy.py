# SNS subscription filter policies: a policy is validated once (when a subscription is created) and compiled into
# closures over frozensets, prefix tuples and numeric bounds; the fan-out calls the result once per record and it
# never looks at the policy dict again. Pure: no clock, no I/O. Must not know about subscriptions, cursors, queues or
# any protocol. Rules and limits: ../shared/reference/sqs_sns.md section 2.3 and docs/fanout.md.
"""SNS filter policies, compiled.

A policy is a JSON object. Each key names a message attribute (here: a record header) or, with
``filter_policy_scope="MessageBody"``, a property of the record value parsed as a JSON object (keys may nest).
Keys are ANDed; the values in one key's list are ORed; ``"$or": [{...}, {...}]`` ORs whole sub-policies (SNS
developer guide, "AND/OR logic"). Values: exact strings, numbers, ``true``, ``false``, ``null``, and the operators
``prefix``, ``suffix``, ``equals-ignore-case``, ``anything-but`` (a value, a list, or ``{"prefix": ...}``),
``numeric`` (``=``, ``<``, ``<=``, ``>``, ``>=``, or a lower and an upper bound), ``exists`` and ``cidr`` (SNS
developer guide: "String value matching", "Numeric value matching", "Key matching").

How a record is seen:

* **Headers** (``MessageAttributes``): each header value is UTF-8 text, an SNS ``String`` that is also a ``Number``
  when the whole text is a decimal number (``10``, ``-3.5``, ``3.015e2``): numeric rules and number values in the
  policy compare it as a number, string rules as text. A header whose bytes are not UTF-8, or that has no value
  (``None``: Kafka allows it), is skipped, as SNS skips ``Binary`` attributes. A header name repeated in the
  record is SNS's ``String.Array``: the key matches if any of its values does. Header values are never parsed as
  JSON: a Kafka header carries no type, so a text that happens to start with ``[`` would otherwise change meaning.
* **Value** (``MessageBody``): UTF-8 JSON; anything else, or JSON that is not an object, matches no policy but the
  empty one (as SNS, which expects a JSON object). A policy path collects every scalar reached through nested
  objects and arrays (SNS: ``{"price": [100, 50]}`` holds two values); objects themselves are not values. JSON
  strings match string rules only, JSON numbers numeric rules only, ``true``/``false``/``null`` only themselves.

A key with no value (header absent, path reaching no scalar) matches only ``{"exists": false}``; every other rule,
``anything-but`` included, needs a value (SNS: an absent attribute fails ``anything-but``). ``anything-but``
matches a value that none of its listed values would match exactly; ``null`` never matches it.

Limits, as SNS ("Filter policy constraints"): at most ``POLICY_BYTES_MAX`` bytes of JSON; at most ``KEYS_MAX`` keys
in one branch (after ``$or`` is multiplied out; for the body only top-level keys count); at most
``COMBINATIONS_MAX`` combinations, counted as SNS does: each value list contributes its length times its key's
nesting depth (1 at the top), keys multiply, ``$or`` branches add; numbers in a policy within
``±NUMBER_ABS_MAX``.
"""
from __future__ import annotations

import ipaddress
import json
import math
import operator
from typing import Any

from millpond.broker.core.fanout.matching import (
    Key,
    Matcher,
    Node,
    Rules,
    all_keys,
    body_matcher,
    compile_node,
    headers_matcher,
    match_all,
    refuse_constant,
)
from millpond.broker.wire.errors import InvalidParameterValueError

MESSAGE_ATTRIBUTES = "MessageAttributes"
MESSAGE_BODY = "MessageBody"
SCOPES = (MESSAGE_ATTRIBUTES, MESSAGE_BODY)
POLICY_BYTES_MAX = 256 * 1024  # SNS: "The maximum size of a filter policy is 256 KB"
COMBINATIONS_MAX = 150  # SNS: "The total combination of values ... must not exceed 150"
KEYS_MAX = 5  # SNS: "A filter policy can have a maximum of five keys"
NUMBER_ABS_MAX = 1e9  # SNS: numeric values "from -10^9 to 10^9"
OPERATORS = ("anything-but", "cidr", "equals-ignore-case", "exists", "numeric", "prefix", "suffix")
NUMERIC_OPERATORS = ("=", "<", "<=", ">", ">=")

_LOWER = {">": operator.gt, ">=": operator.ge}
_UPPER = {"<": operator.lt, "<=": operator.le}


class FilterPolicy:
    """A validated, compiled filter policy.

    ``matches(headers, value) -> bool``: ``headers`` is the record's ``[(name, bytes | None), ...]`` (a name may
    repeat), ``value`` the record value (bytes). With the ``MessageAttributes`` scope only the headers are read,
    with ``MessageBody`` only the value. Never raises for headers and values of these types. ``policy`` is the
    policy's own copy (the caller's dict may change afterwards without effect), ``scope`` its scope,
    ``combinations`` its SNS complexity (at most ``COMBINATIONS_MAX``); ``canonical`` the policy as JSON with
    sorted keys and no spaces: two texts that parse to the same policy have the same one.
    """

    __slots__ = ("scope", "policy", "combinations", "matches", "canonical")

    def __init__(self, scope: str, policy: dict[str, Any], combinations: int, matches: Matcher) -> None:
        self.scope = scope
        self.policy = policy
        self.combinations = combinations
        self.matches = matches
        self.canonical = json.dumps(policy, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def __repr__(self) -> str:
        return f"FilterPolicy(scope={self.scope!r}, policy={json.dumps(self.policy)})"


def compile_policy(policy: dict[str, Any] | str, scope: str = MESSAGE_ATTRIBUTES) -> FilterPolicy:
    """Validate ``policy`` (a dict, or its JSON text) for ``scope`` and compile it.

    Raises ``InvalidParameterValueError`` (``details["parameter"]`` is ``filter_policy`` or
    ``filter_policy_scope``) with a message naming the bad part, e.g. ``filter policy: key "price": numeric:
    expected an operator like ">", got "=>"``. The empty policy ``{}`` matches every record.
    """
    if scope not in SCOPES:
        raise InvalidParameterValueError(f'filter_policy_scope must be "MessageAttributes" or "MessageBody", got '
                                         f"{_show(scope)}", parameter="filter_policy_scope")
    if isinstance(policy, str):
        text = policy
        _check_size(len(text.encode("utf-8", "surrogatepass")))
        try:
            policy = json.loads(text, parse_constant=refuse_constant)
        except RecursionError:
            raise _error("nested too deeply to be a JSON policy") from None
        except ValueError as exc:
            raise _error(f"not valid JSON: {exc}") from None
    elif isinstance(policy, dict):
        try:
            text = json.dumps(policy, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except RecursionError:
            raise _error("nested too deeply to be a JSON policy") from None
        except (TypeError, ValueError) as exc:
            raise _error(f"not expressible as JSON: {exc}") from None
        _check_size(len(text.encode("utf-8", "surrogatepass")))
        policy = json.loads(text)  # the policy's own copy, and int keys or tuples normalised as JSON would
    if not isinstance(policy, dict):
        raise _error(f"expected a JSON object, got {_show(policy)}")
    if not policy:
        return FilterPolicy(scope, policy, 0, match_all)
    node, combinations = _Parser(scope == MESSAGE_BODY).node(policy, (), (), 1)
    if combinations > COMBINATIONS_MAX:
        raise _error(f"{combinations} combinations, more than SNS allows ({COMBINATIONS_MAX}): each value list counts "
                     f"its length times its key's nesting depth, keys multiply, $or branches add")
    tops = max(_branch_tops(node), key=len, default=())  # the branch with the most keys: what to cut first
    if len(tops) > KEYS_MAX:
        names = ", ".join(f'"{t}"' for t in sorted(tops))
        raise _error(f"{len(tops)} keys ({names}) must all match at once, more than SNS allows ({KEYS_MAX})")
    if scope == MESSAGE_BODY:
        paths = tuple(dict.fromkeys(key.path for key in all_keys(node)))
        matches = body_matcher(compile_node(node, text=False), paths)
    else:
        names = frozenset(key.path[0] for key in all_keys(node))
        matches = headers_matcher(compile_node(node, text=True), names)
    return FilterPolicy(scope, policy, combinations, matches)


class _Parser:
    def __init__(self, body: bool) -> None:
        self.body = body

    def node(self, obj: dict[str, Any], path: tuple[str, ...], shown: tuple[str, ...],
             depth: int) -> tuple[Node, int]:
        """Parse one JSON object of the policy into a node and its SNS combination count."""
        keys: list[Key] = []
        ors: list[tuple[Node, ...]] = []
        combinations = 1
        for key, spec in obj.items():
            here = (*shown, key)
            if key == "$or" and _is_or(spec):
                branches = []
                total = 0
                for i, branch in enumerate(spec):
                    if not branch:
                        raise _error("a $or branch needs at least one key", (*shown, f"$or[{i}]"))
                    sub, count = self.node(branch, path, (*shown, f"$or[{i}]"), depth)
                    branches.append(sub)
                    total += count
                ors.append(tuple(branches))
                combinations *= total
            elif isinstance(spec, dict):
                if not self.body:
                    raise _error('nested keys need filter_policy_scope="MessageBody" (SNS refuses nested '
                                 "attribute policies)", here)
                if not spec:
                    raise _error("a nested object needs at least one key", here)
                if depth >= COMBINATIONS_MAX:
                    raise _error(f"nested deeper than {COMBINATIONS_MAX} levels: a key's depth multiplies its "
                                 f"combinations, more than SNS allows ({COMBINATIONS_MAX})", here)
                sub, count = self.node(spec, (*path, key), here, depth + 1)
                keys.extend(sub.keys)
                ors.extend(sub.ors)
                combinations *= count
            elif isinstance(spec, list):
                if not spec:
                    raise _error("an empty list matches nothing; give at least one value", here)
                keys.append(Key((*path, key), self.rules(spec, here)))
                combinations *= len(spec) * depth
            else:
                raise _error(f"expected a list of values or a nested object, got {_show(spec)}", here)
        return Node(tuple(keys), tuple(ors)), combinations

    def rules(self, spec: list[Any], here: tuple[str, ...]) -> Rules:
        rules = Rules()
        for item in spec:
            if item is True:
                rules.true = True
            elif item is False:
                rules.false = True
            elif item is None:
                rules.null = True
            elif isinstance(item, str):
                rules.strs.add(item)
            elif isinstance(item, (int, float)):
                rules.nums.add(_policy_number(item, here, "a number"))
            elif isinstance(item, dict):
                self.operator(item, rules, here)
            else:
                raise _error(f'expected a string, number, true, false, null or an operator object such as '
                             f'{{"prefix": "a"}}, got {_show(item)}', here)
        return rules

    def operator(self, item: dict[str, Any], rules: Rules, here: tuple[str, ...]) -> None:
        if len(item) != 1:
            raise _error(f"an operator object has exactly one key, got {len(item)}: {_show(item)}", here)
        ((name, arg),) = item.items()
        if name in ("prefix", "suffix", "equals-ignore-case"):
            if not isinstance(arg, str):
                raise _error(f"{name}: expected a string, got {_show(arg)}", here)
            if name == "prefix":
                rules.prefixes.add(arg)
            elif name == "suffix":
                rules.suffixes.add(arg)
            else:
                rules.folded.add(arg.casefold())
        elif name == "exists":
            if not isinstance(arg, bool):
                raise _error(f"exists: expected true or false, got {_show(arg)}", here)
            if arg:
                rules.exists_true = True
            else:
                rules.exists_false = True
        elif name == "numeric":
            _numeric(arg, rules, here)
        elif name == "anything-but":
            _anything_but(arg, rules, here)
        elif name == "cidr":
            if not isinstance(arg, str):
                raise _error(f'cidr: expected a string such as "10.0.0.0/24", got {_show(arg)}', here)
            if arg.count("/") != 1:
                raise _error(f'cidr: expected an address, one "/" and a prefix length, as "10.0.0.0/24", got '
                             f"{_show(arg)}", here)
            try:
                rules.networks.append(ipaddress.ip_network(arg, strict=False))
            except ValueError as exc:
                raise _error(f"cidr: {exc}", here) from None
        else:
            raise _error(f"unknown operator {_show(name)} (SNS has {', '.join(OPERATORS)})", here)


def _numeric(arg: Any, rules: Rules, here: tuple[str, ...]) -> None:
    """``[op, n]`` or ``[">"|">=", low, "<"|"<=", high]`` (SNS "Value range matching")."""
    if not isinstance(arg, list) or not arg:
        raise _error(f'numeric: expected a list such as [">", 0, "<=", 100], got {_show(arg)}', here)
    if arg[0] not in NUMERIC_OPERATORS:
        raise _error(f'numeric: expected an operator like ">", got {_show(arg[0])}', here)
    if len(arg) < 2:
        raise _error(f'numeric: "{arg[0]}" needs a number after it', here)
    low = _policy_number(arg[1], here, f'numeric: the operand of "{arg[0]}"')
    if len(arg) == 2:
        if arg[0] == "=":
            rules.nums.add(low)
        elif arg[0] in _LOWER:  # the open side is closed at infinity: a number too large for a float is inf
            rules.ranges.append((_LOWER[arg[0]], low, operator.le, math.inf))
        else:
            rules.ranges.append((operator.ge, -math.inf, _UPPER[arg[0]], low))
        return
    if arg[0] not in _LOWER:
        raise _error(f'numeric: only a lower bound (">" or ">=") may be followed by an upper bound, got '
                     f"{_show(arg[0])} first", here)
    if arg[2] not in ("<", "<="):
        raise _error(f'numeric: expected an upper bound operator "<" or "<=", got {_show(arg[2])}', here)
    if len(arg) < 4:
        raise _error(f'numeric: "{arg[2]}" needs a number after it', here)
    if len(arg) > 4:
        raise _error(f'numeric: at most two bounds, as [">", 0, "<=", 100], got {len(arg)} terms', here)
    high = _policy_number(arg[3], here, f'numeric: the operand of "{arg[2]}"')
    if high <= low:
        raise _error(f"numeric: the lower bound {_show(arg[1])} must be below the upper bound {_show(arg[3])}", here)
    rules.ranges.append((_LOWER[arg[0]], low, _UPPER[arg[2]], high))


def _anything_but(arg: Any, rules: Rules, here: tuple[str, ...]) -> None:
    """A string, a number, a list of them, or ``{"prefix": "..."}`` (SNS "Anything-but matching")."""
    if isinstance(arg, dict):
        if list(arg) != ["prefix"]:
            raise _error(f'anything-but: the only operator SNS allows inside anything-but is "prefix", got '
                         f"{_show(arg)}", here)
        if not isinstance(arg["prefix"], str):
            raise _error(f"anything-but: prefix: expected a string, got {_show(arg['prefix'])}", here)
        rules.negations.append((frozenset(), frozenset(), arg["prefix"]))
        return
    items = arg if isinstance(arg, list) else [arg]
    if not items:
        raise _error("anything-but: an empty list excludes nothing; give at least one value", here)
    strs: set[str] = set()
    nums: set[float] = set()
    for item in items:
        if isinstance(item, str):
            strs.add(item)
        elif isinstance(item, (int, float)) and not isinstance(item, bool):
            nums.add(_policy_number(item, here, "anything-but: a number"))
        else:
            raise _error(f"anything-but: expected strings or numbers, got {_show(item)}", here)
    rules.negations.append((frozenset(strs), frozenset(nums), None))


def _policy_number(value: Any, here: tuple[str, ...], what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _error(f"{what}: expected a number, got {_show(value)}", here)
    if not -NUMBER_ABS_MAX <= value <= NUMBER_ABS_MAX:  # also refuses NaN
        raise _error(f"{what}: {_show(value)} is outside SNS's range -1e9 to 1e9", here)
    return float(value)


def _is_or(spec: Any) -> bool:
    """SNS reads "$or" as OR only for a list of at least two objects none of whose keys is an operator name;
    otherwise "$or" is an ordinary key (SNS developer guide, "OR operator")."""
    return (isinstance(spec, list) and len(spec) >= 2 and all(isinstance(b, dict) for b in spec)
            and not any(k in OPERATORS for b in spec for k in b))


def _branch_tops(node: Node) -> list[frozenset[str]]:
    """The top-level key names of each conjunction once $or is multiplied out (at most COMBINATIONS_MAX)."""
    branches = [frozenset(key.path[0] for key in node.keys)]
    for group in node.ors:
        branches = [mine | theirs for mine in branches for sub in group for theirs in _branch_tops(sub)]
    return branches


def _check_size(size: int) -> None:
    if size > POLICY_BYTES_MAX:
        raise _error(f"{size:,} bytes of JSON, more than SNS allows ({POLICY_BYTES_MAX:,}, 256 KB)")


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _error(message: str, where: tuple[str, ...] = ()) -> InvalidParameterValueError:
    prefix = f'filter policy: key "{".".join(where)}": ' if where else "filter policy: "
    return InvalidParameterValueError(prefix + message, parameter="filter_policy")


