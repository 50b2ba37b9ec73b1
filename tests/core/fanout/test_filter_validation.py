# Invalid filter policies are refused when compiled, with a message that names the key and the bad part; SNS's
# limits (policy size, combinations, keys per branch, number range) hold at their edges.
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from millpond.broker.core.fanout import COMBINATIONS_MAX, POLICY_BYTES_MAX, compile_policy
from millpond.broker.wire.errors import InvalidParameterValueError
from reference_filter import reference_matches


def refused(policy, scope: str = "MessageAttributes") -> str:
    with pytest.raises(InvalidParameterValueError) as caught:
        compile_policy(policy, scope)
    return caught.value.message


@pytest.mark.parametrize("policy, message", [
    ({"price": [{"numeric": ["=>", 5]}]},
     'filter policy: key "price": numeric: expected an operator like ">", got "=>"'),
    ({"price": [{"numeric": ["<", 5, ">", 1]}]},
     'filter policy: key "price": numeric: only a lower bound (">" or ">=") may be followed by an upper bound, '
     'got "<" first'),
    ({"price": [{"numeric": [">", 5, "<", 1]}]},
     'filter policy: key "price": numeric: the lower bound 5 must be below the upper bound 1'),
    ({"price": [{"numeric": [">", 5, "<", 5]}]},
     'filter policy: key "price": numeric: the lower bound 5 must be below the upper bound 5'),
    ({"price": [{"numeric": [">", 0, ">", 5]}]},
     'filter policy: key "price": numeric: expected an upper bound operator "<" or "<=", got ">"'),
    ({"price": [{"numeric": [">", 0, ["<"], 5]}]},
     'filter policy: key "price": numeric: expected an upper bound operator "<" or "<=", got ["<"]'),
    ({"price": [{"numeric": [{">": 0}]}]},
     'filter policy: key "price": numeric: expected an operator like ">", got {">": 0}'),
    ({"price": [{"numeric": [">", "5"]}]},
     'filter policy: key "price": numeric: the operand of ">": expected a number, got "5"'),
    ({"price": [{"numeric": [">", True]}]},
     'filter policy: key "price": numeric: the operand of ">": expected a number, got true'),
    ({"price": [{"numeric": [">"]}]}, 'filter policy: key "price": numeric: ">" needs a number after it'),
    ({"price": [{"numeric": [">", 0, "<"]}]}, 'filter policy: key "price": numeric: "<" needs a number after it'),
    ({"price": [{"numeric": [">", 0, "<=", 100, "<", 5]}]},
     'filter policy: key "price": numeric: at most two bounds, as [">", 0, "<=", 100], got 6 terms'),
    ({"price": [{"numeric": []}]},
     'filter policy: key "price": numeric: expected a list such as [">", 0, "<=", 100], got []'),
    ({"price": [{"numeric": 5}]},
     'filter policy: key "price": numeric: expected a list such as [">", 0, "<=", 100], got 5'),
    ({"price": [{"numeric": [">", 1e10]}]},
     'filter policy: key "price": numeric: the operand of ">": 10000000000.0 is outside SNS\'s range -1e9 to 1e9'),
    ({"price": [-1000000001]}, 'filter policy: key "price": a number: -1000000001 is outside SNS\'s range -1e9 to 1e9'),
    ({"name": [{"prefix": 5}]}, 'filter policy: key "name": prefix: expected a string, got 5'),
    ({"name": [{"suffix": None}]}, 'filter policy: key "name": suffix: expected a string, got null'),
    ({"name": [{"equals-ignore-case": ["a"]}]},
     'filter policy: key "name": equals-ignore-case: expected a string, got ["a"]'),
    ({"store": [{"exists": "yes"}]}, 'filter policy: key "store": exists: expected true or false, got "yes"'),
    ({"ip": [{"cidr": "10.0.0.0"}]},
     'filter policy: key "ip": cidr: expected an address, one "/" and a prefix length, as "10.0.0.0/24", '
     'got "10.0.0.0"'),
    ({"ip": [{"cidr": "10.0.0.300/24"}]},
     "filter policy: key \"ip\": cidr: '10.0.0.300/24' does not appear to be an IPv4 or IPv6 network"),
    ({"ip": [{"cidr": 10}]}, 'filter policy: key "ip": cidr: expected a string such as "10.0.0.0/24", got 10'),
    ({"event": [{"anything-but": {"suffix": "x"}}]},
     'filter policy: key "event": anything-but: the only operator SNS allows inside anything-but is "prefix", '
     'got {"suffix": "x"}'),
    ({"event": [{"anything-but": {"prefix": 1}}]},
     'filter policy: key "event": anything-but: prefix: expected a string, got 1'),
    ({"event": [{"anything-but": []}]},
     'filter policy: key "event": anything-but: an empty list excludes nothing; give at least one value'),
    ({"event": [{"anything-but": [True]}]},
     'filter policy: key "event": anything-but: expected strings or numbers, got true'),
    ({"event": [{"wildcard": "a*"}]},
     'filter policy: key "event": unknown operator "wildcard" (SNS has anything-but, cidr, equals-ignore-case, '
     'exists, numeric, prefix, suffix)'),
    ({"event": [{"prefix": "a", "suffix": "b"}]},
     'filter policy: key "event": an operator object has exactly one key, got 2: {"prefix": "a", "suffix": "b"}'),
    ({"event": [{}]}, 'filter policy: key "event": an operator object has exactly one key, got 0: {}'),
    ({"event": []}, 'filter policy: key "event": an empty list matches nothing; give at least one value'),
    ({"key_a": "value_one"},  # AWS-recorded: '"key_a" must be an object or an array'
     'filter policy: key "key_a": expected a list of values or a nested object, got "value_one"'),
    ({"key_a": 5}, 'filter policy: key "key_a": expected a list of values or a nested object, got 5'),
    ({"event": [["nested"]]},
     'filter policy: key "event": expected a string, number, true, false, null or an operator object such as '
     '{"prefix": "a"}, got ["nested"]'),
    ({"object": {"key": ["a"]}},  # AWS-recorded: nested policies need the MessageBody scope
     'filter policy: key "object": nested keys need filter_policy_scope="MessageBody" (SNS refuses nested '
     'attribute policies)'),
    ({"$or": [{"a": ["x"]}, {}]}, 'filter policy: key "$or[1]": a $or branch needs at least one key'),
    ({"$or": [{"a": ["x"]}, {"b": [{"numeric": ["~", 1]}]}]},
     'filter policy: key "$or[1].b": numeric: expected an operator like ">", got "~"'),
    # not an OR (an operator name inside): "$or" is then an ordinary key, and its list is not a value list
    ({"$or": [{"numeric": 123}, {"prefix": "abc"}]},
     'filter policy: key "$or": numeric: expected a list such as [">", 0, "<=", 100], got 123'),
    ({"$or": [{"a": ["x"]}]}, 'filter policy: key "$or": unknown operator "a" (SNS has anything-but, cidr, '
                              'equals-ignore-case, exists, numeric, prefix, suffix)'),
])
def test_invalid_attribute_policies_name_the_bad_part(policy, message):
    assert refused(policy) == message
    assert refused(json.dumps(policy)) == message  # the same policy as JSON text


@pytest.mark.parametrize("policy, message", [
    ({"detail": {"price": [{"numeric": ["=>", 5]}]}},
     'filter policy: key "detail.price": numeric: expected an operator like ">", got "=>"'),
    ({"detail": {}}, 'filter policy: key "detail": a nested object needs at least one key'),
    ({"detail": {"$or": [{"a": ["x"]}, {"b": {"c": [{"exists": 1}]}}]}},
     'filter policy: key "detail.$or[1].b.c": exists: expected true or false, got 1'),
])
def test_invalid_body_policies_name_the_nested_key(policy, message):
    assert refused(policy, "MessageBody") == message


def test_the_error_is_invalid_parameter_value_naming_the_parameter():
    with pytest.raises(InvalidParameterValueError) as caught:
        compile_policy({"a": "x"})
    assert caught.value.details == {"parameter": "filter_policy"}
    assert caught.value.name == "INVALID_PARAMETER_VALUE"
    with pytest.raises(InvalidParameterValueError) as caught:
        compile_policy({"a": ["x"]}, "Body")
    assert caught.value.message == 'filter_policy_scope must be "MessageAttributes" or "MessageBody", got "Body"'
    assert caught.value.details == {"parameter": "filter_policy_scope"}


@pytest.mark.parametrize("text, message", [
    ('{"a": [', "filter policy: not valid JSON: Expecting value: line 1 column 8 (char 7)"),
    ('["a"]', 'filter policy: expected a JSON object, got ["a"]'),
    ('{"a": [NaN]}', "filter policy: not valid JSON: NaN is not a JSON number"),
    ('{"a": [1e10]}', 'filter policy: key "a": a number: 10000000000.0 is outside SNS\'s range -1e9 to 1e9'),
    ('{"a":' * 5000 + "[1]" + "}" * 5000, "filter policy: nested too deeply to be a JSON policy"),
])
def test_invalid_policy_text(text, message):
    assert refused(text, "MessageBody") == message


def test_a_policy_that_is_not_json_is_refused():
    assert refused({"a": [b"bytes"]}) == ("filter policy: not expressible as JSON: Object of type bytes is not "
                                          "JSON serializable")
    assert refused({"a": [float("nan")]}) == ("filter policy: not expressible as JSON: Out of range float values "
                                              "are not JSON compliant")


# -- limits ---------------------------------------------------------------------------------------------------------

def test_policy_size_limit_is_256_kib_of_json():
    def policy_of(size: int) -> str:
        text = '{"a":[""]}'
        return '{"a":["' + "x" * (size - len(text)) + '"]}'

    assert len(policy_of(POLICY_BYTES_MAX).encode()) == POLICY_BYTES_MAX
    assert compile_policy(policy_of(POLICY_BYTES_MAX)).combinations == 1
    assert refused(policy_of(POLICY_BYTES_MAX + 1)) == \
        "filter policy: 262,145 bytes of JSON, more than SNS allows (262,144, 256 KB)"
    # a dict is measured as compact JSON
    assert compile_policy(json.loads(policy_of(POLICY_BYTES_MAX))).combinations == 1
    assert refused(json.loads(policy_of(POLICY_BYTES_MAX + 1))).startswith("filter policy: 262,145 bytes")
    # UTF-8 bytes, not characters
    assert refused('{"a":["' + "é" * (POLICY_BYTES_MAX // 2) + '"]}').startswith("filter policy: 262,154 bytes")


def test_combinations_multiply_across_keys_up_to_150():  # SNS guide: 3 x 1 x 2 = 6
    assert compile_policy({"key_a": ["1", "2", "3"], "key_b": ["1"], "key_c": ["1", "2"]}).combinations == 6
    ten, fifteen = [str(i) for i in range(10)], [str(i) for i in range(15)]
    assert compile_policy({"a": ten, "b": fifteen}).combinations == COMBINATIONS_MAX
    assert refused({"a": ten, "b": [*fifteen, "x"]}) == (
        "filter policy: 160 combinations, more than SNS allows (150): each value list counts its length times its "
        "key's nesting depth, keys multiply, $or branches add")


def test_nested_keys_count_their_depth():  # SNS guide: 3 x 4 x 2 x 3 = 72; AWS-recorded: x 1 x 3 = 216 refused
    nested = {"key_a": {"key_b": {"key_c": ["value_one", "value_two", "value_three", "value_four"]}},
              "key_d": {"key_e": ["value_one", "value_two", "value_three"]}}
    assert compile_policy(nested, "MessageBody").combinations == 72
    assert refused({**nested, "key_f": ["value_one", "value_two", "value_three"]}, "MessageBody").startswith(
        "filter policy: 216 combinations, more than SNS allows (150)")


def test_or_branches_add_their_combinations():
    branch = {"b": [str(i) for i in range(74)]}
    assert compile_policy({"a": ["x", "y"], "$or": [branch, {"c": ["z"]}]}).combinations == 2 * (74 + 1)
    assert refused({"a": ["x", "y"], "$or": [branch, {"c": ["z", "w"]}]}).startswith(
        "filter policy: 152 combinations")


def test_nesting_depth_is_bounded_by_the_combinations_rule():
    def nested(depth: int) -> dict:
        policy: dict = {"leaf": ["x"]}
        for i in range(depth - 1):
            policy = {f"k{i}": policy}
        return policy

    assert compile_policy(nested(150), "MessageBody").combinations == 150
    assert refused(nested(151), "MessageBody") == (
        'filter policy: key "k149.k148.k147.k146.k145.k144.k143.k142.k141.k140.k139.k138.k137.k136.k135.k134.k133.'
        + ".".join(f"k{i}" for i in range(132, -1, -1))
        + '": nested deeper than 150 levels: a key\'s depth multiplies its combinations, more than SNS allows (150)')


def test_at_most_five_keys_must_match_at_once():  # AWS-recorded: six top-level keys refused
    five = {k: ["v"] for k in "abcde"}
    assert compile_policy(five).combinations == 1
    assert refused({**five, "f": ["v"]}) == (
        'filter policy: 6 keys ("a", "b", "c", "d", "e", "f") must all match at once, more than SNS allows (5)')
    assert refused({**five, "f": ["v"]}, "MessageBody").startswith("filter policy: 6 keys")


def test_body_policies_count_top_level_keys_only():  # SNS guide, "Key counting in filter policies"
    finding = {"state": ["SUCCESS"], "severity": [{"exists": True}], "message": [{"exists": True}],
               "finding": {"standard_control": [{"exists": True}], "region": [{"exists": True}],
                           "account": [{"exists": True}]}}
    assert compile_policy(finding, "MessageBody").combinations == 8
    wide = {"detail": {k: ["v"] for k in "abcdefg"}}
    assert compile_policy(wide, "MessageBody").combinations == 2 ** 7


def test_keys_are_counted_per_or_branch():
    four = {k: ["v"] for k in "abcd"}
    assert compile_policy({**four, "$or": [{"e": ["v"]}, {"f": ["v"]}]}).combinations == 2
    assert refused({**four, "$or": [{"e": ["v"]}, {"f": ["v"], "g": ["v"]}]}) == (
        'filter policy: 6 keys ("a", "b", "c", "d", "f", "g") must all match at once, more than SNS allows (5)')


def test_policy_numbers_at_the_edge_of_the_range():
    assert compile_policy({"n": [1e9, -1e9, {"numeric": [">=", -1000000000, "<=", 1000000000]}]}).combinations == 3
    assert refused({"n": [{"anything-but": [1000000000.5]}]}) == (
        'filter policy: key "n": anything-but: a number: 1000000000.5 is outside SNS\'s range -1e9 to 1e9')


# any JSON at all, with the operator names and "$or" among the keys and strings
_WORDS = ["a", "$or", "prefix", "suffix", "anything-but", "numeric", "exists", "cidr", "equals-ignore-case", "<",
          ">=", "=", "10.0.0.0/8"]
_any_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2 * 10**9, 2 * 10**9) | st.floats(allow_nan=False)
    | st.sampled_from(_WORDS),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(_WORDS), inner, max_size=3),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(_any_json, st.sampled_from(["MessageAttributes", "MessageBody"]))
def test_any_json_either_compiles_or_is_refused_as_invalid(policy, scope):
    try:
        compiled = compile_policy(policy, scope)
    except InvalidParameterValueError as exc:
        assert exc.message.startswith("filter policy: ")
        assert exc.details == {"parameter": "filter_policy"}
    else:  # accepted: then the reference reads it the same way
        headers, value = [("a", b"10.0.0.1"), ("$or", b"x")], b'{"a": [1, "x", null, {"a": true}], "$or": "x"}'
        assert compiled.matches(headers, value) == reference_matches(policy, scope, headers, value)
