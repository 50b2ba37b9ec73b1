# Every filter operator with records that pass and records that do not, on headers (MessageAttributes) and on the
# JSON value (MessageBody). Examples marked "SNS guide" are the developer guide's; "AWS-recorded" ones are
# LocalStack's tests validated against AWS (tests/aws/services/sns/test_sns_filter_policy.py).
from __future__ import annotations

import json

import pytest

from millpond.broker.core.fanout import compile_policy
from filterkit import on_body, on_headers


# -- exact values ---------------------------------------------------------------------------------------------------

def test_exact_strings_match_case_sensitively():  # SNS guide, "Exact matching"
    policy = {"customer_interests": ["rugby", "tennis"]}
    assert on_headers(policy, ("customer_interests", "rugby")) is True
    assert on_headers(policy, ("customer_interests", "tennis")) is True
    assert on_headers(policy, ("customer_interests", "baseball")) is False
    assert on_headers(policy, ("customer_interests", "Rugby")) is False
    assert on_body(policy, {"customer_interests": "rugby"}) is True
    assert on_body(policy, {"customer_interests": "baseball"}) is False


def test_a_repeated_header_is_a_string_array_any_element_matches():  # SNS guide: String.Array element-wise
    policy = {"customer_interests": ["rugby", "tennis"]}
    assert on_headers(policy, ("customer_interests", "soccer"), ("customer_interests", "rugby")) is True
    assert on_headers(policy, ("customer_interests", "baseball"), ("customer_interests", "soccer")) is False
    assert on_body(policy, {"customer_interests": ["soccer", "rugby"]}) is True
    assert on_body(policy, {"customer_interests": ["baseball"]}) is False


def test_exact_numbers_compare_numerically_and_header_text_is_a_number():  # SNS guide: 301.5 matches 3.015e2
    policy = {"price_usd": [301.5]}
    for text in ("301.5", "3.015e2", "301.50", "+301.5"):
        assert on_headers(policy, ("price_usd", text)) is True, text
    for text in ("301.6", "abc", "301.5 ", "0x12d"):
        assert on_headers(policy, ("price_usd", text)) is False, text
    assert on_body(policy, {"price_usd": 301.5}) is True
    assert on_body(policy, b'{"price_usd": 3.015e2}') is True
    assert on_body(policy, {"price_usd": "301.5"}) is False  # a JSON string is not a number


def test_a_long_header_that_is_no_number_is_read_in_linear_time():  # a quadratic regex would hang here
    policy = compile_policy({"n": [{"numeric": [">", 0]}, {"anything-but": [5]}]})
    assert policy.matches([("n", b"1" * 200_000 + b"x")], b"") is True  # not a number, so not 5: anything-but
    assert compile_policy({"n": [{"numeric": [">", 0]}]}).matches([("n", b"1" * 200_000 + b"x")], b"") is False
    assert compile_policy({"n": [{"numeric": [">", 0]}]}).matches([("n", b"1" * 200_000)], b"") is True


def test_a_string_in_the_policy_compares_as_text_even_when_it_looks_like_a_number():
    assert on_headers({"n": ["10"]}, ("n", "10")) is True
    assert on_headers({"n": ["10"]}, ("n", "10.0")) is False
    assert on_headers({"n": [10]}, ("n", "10.0")) is True
    assert on_body({"n": ["10"]}, {"n": 10}) is False
    assert on_body({"n": [10]}, {"n": 10}) is True


def test_true_false_and_null_match_only_those_json_values():
    assert on_body({"flag": [True]}, {"flag": True}) is True
    assert on_body({"flag": [True]}, {"flag": 1}) is False
    assert on_body({"flag": [False]}, {"flag": False}) is True
    assert on_body({"flag": [False]}, {"flag": 0}) is False
    assert on_body({"v": [None]}, {"v": None}) is True
    assert on_body({"v": [None]}, {}) is False  # null matches a present null, not an absent key
    assert on_headers({"flag": [True]}, ("flag", "true")) is False  # header text is a string


# -- string operators -----------------------------------------------------------------------------------------------

def test_prefix():  # SNS guide, "Prefix matching"
    policy = {"customer_interests": [{"prefix": "bas"}]}
    assert on_headers(policy, ("customer_interests", "baseball")) is True
    assert on_headers(policy, ("customer_interests", "basketball")) is True
    assert on_headers(policy, ("customer_interests", "rugby")) is False
    assert on_body(policy, {"customer_interests": "baseball"}) is True
    assert on_body({"n": [{"prefix": "1"}]}, {"n": 123}) is False  # string operators ignore JSON numbers


def test_several_prefixes_and_suffixes_in_one_list():
    policy = {"file": [{"prefix": "img-"}, {"prefix": "doc-"}, {"suffix": ".png"}]}
    assert on_headers(policy, ("file", "doc-1.txt")) is True
    assert on_headers(policy, ("file", "x.png")) is True
    assert on_headers(policy, ("file", "vid-1.mp4")) is False


def test_suffix():  # SNS guide, "Suffix matching"
    policy = {"customer_interests": [{"suffix": "ball"}]}
    assert on_headers(policy, ("customer_interests", "baseball")) is True
    assert on_headers(policy, ("customer_interests", "rugby")) is False
    assert on_body(policy, {"customer_interests": "football"}) is True


def test_equals_ignore_case():  # SNS guide, "Equals-ignore-case matching"
    policy = {"customer_interests": [{"equals-ignore-case": "RUGBY"}]}
    assert on_headers(policy, ("customer_interests", "rugby")) is True
    assert on_headers(policy, ("customer_interests", "Rugby")) is True
    assert on_headers(policy, ("customer_interests", "rugbyx")) is False
    assert on_body(policy, {"customer_interests": "rUgBy"}) is True


def test_cidr_matches_ip_addresses_in_the_network():  # SNS guide, "IP address matching"
    policy = {"source_ip": [{"cidr": "10.0.0.0/24"}]}
    assert on_headers(policy, ("source_ip", "10.0.0.255")) is True
    assert on_headers(policy, ("source_ip", "10.0.0.0")) is True
    assert on_headers(policy, ("source_ip", "10.1.1.0")) is False
    assert on_headers(policy, ("source_ip", "not an address")) is False
    assert on_headers(policy, ("source_ip", "::ffff:10.0.0.1")) is False  # an IPv6 address is in no IPv4 network
    assert on_body(policy, {"source_ip": "10.0.0.7"}) is True


def test_cidr_ipv6_and_host_bits():
    assert on_headers({"ip": [{"cidr": "2001:db8::/32"}]}, ("ip", "2001:db8::1")) is True
    assert on_headers({"ip": [{"cidr": "2001:db8::/32"}]}, ("ip", "2001:db9::1")) is False
    assert on_headers({"ip": [{"cidr": "2001:db8::/32"}]}, ("ip", "10.0.0.1")) is False
    # host bits set: read as the network that holds the address (10.0.0.0/24)
    assert on_headers({"ip": [{"cidr": "10.0.0.7/24"}]}, ("ip", "10.0.0.200")) is True


# -- anything-but ---------------------------------------------------------------------------------------------------

def test_anything_but_a_list_of_strings():  # SNS guide, "Anything-but matching"
    policy = {"customer_interests": [{"anything-but": ["rugby", "tennis"]}]}
    assert on_headers(policy, ("customer_interests", "baseball")) is True
    assert on_headers(policy, ("customer_interests", "rugby")) is False
    # String.Array: matches when some element is not listed (the guide's example)
    assert on_headers(policy, ("customer_interests", "rugby"), ("customer_interests", "baseball")) is True
    assert on_headers(policy, ("customer_interests", "rugby"), ("customer_interests", "tennis")) is False
    assert on_body(policy, {"customer_interests": ["rugby", "baseball"]}) is True
    assert on_body(policy, {"customer_interests": "tennis"}) is False


def test_anything_but_fails_when_the_key_is_absent():  # AWS-recorded: [null, {"anything-but": ...}], no attribute
    policy = {"attr1": [None, {"anything-but": "whatever"}]}
    assert on_headers(policy) is False
    assert on_headers(policy, ("other", "x")) is False
    assert on_headers(policy, ("attr1", "x")) is True
    assert on_body({"a": [{"anything-but": "x"}]}, {}) is False
    assert on_body({"a": [{"anything-but": "x"}]}, {"a": None}) is False  # null is no value to be "anything but"


def test_anything_but_a_single_value_and_numbers():  # SNS guide, "Numeric anything-but"
    assert on_headers({"s": [{"anything-but": "rugby"}]}, ("s", "rugby")) is False
    assert on_headers({"s": [{"anything-but": "rugby"}]}, ("s", "golf")) is True
    policy = {"price": [{"anything-but": [100, 500]}]}
    for text, expected in (("101", True), ("100.1", True), ("100", False), ("1e2", False), ("500.0", False),
                           ("abc", True)):
        assert on_headers(policy, ("price", text)) is expected, text
    assert on_body(policy, {"price": [100, 50]}) is True
    assert on_body(policy, {"price": 100}) is False
    assert on_body(policy, {"price": "100"}) is True  # a string is not the number 100
    assert on_body({"p": [{"anything-but": 5}]}, {"p": 5.0}) is False


def test_anything_but_prefix():  # SNS guide, "Using a prefix with the anything-but operator"
    policy = {"event": [{"anything-but": {"prefix": "order-"}}]}
    assert on_headers(policy, ("event", "data-entry")) is True
    assert on_headers(policy, ("event", "order_number")) is True
    assert on_headers(policy, ("event", "order-cancelled")) is False
    assert on_headers(policy) is False
    assert on_body(policy, {"event": "order-placed"}) is False
    assert on_body(policy, {"event": 7}) is True


def test_anything_but_combined_with_exists_false():  # SNS guide: "anything-but can be combined with exists: false"
    policy = {"store": [{"anything-but": ["example_corp"]}, {"exists": False}]}
    assert on_headers(policy) is True
    assert on_headers(policy, ("store", "other_corp")) is True
    assert on_headers(policy, ("store", "example_corp")) is False


# -- numeric --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rule, passing, failing", [
    (["=", 301.5], ["301.5", "3.015e2"], ["301", "abc"]),
    (["<", 0], ["-1", "-0.00001"], ["0", "1"]),
    (["<=", 0], ["0", "-5"], ["0.1"]),
    ([">", 0], ["0.00001", "7"], ["0", "-2"]),
    ([">=", 10], ["10", "10.0", "1e3"], ["9.99999"]),
    ([">", 0, "<=", 150], ["1", "150", "0.5"], ["0", "150.00001", "151"]),  # SNS guide, "Value range matching"
    ([">=", 0, "<", 1], ["0", "0.99999"], ["1", "-0.1"]),
])
def test_numeric_operators_on_header_text(rule, passing, failing):
    policy = {"price_usd": [{"numeric": rule}]}
    for text in passing:
        assert on_headers(policy, ("price_usd", text)) is True, text
    for text in failing:
        assert on_headers(policy, ("price_usd", text)) is False, text


def test_numeric_on_the_body_needs_a_json_number():
    policy = {"price": [{"numeric": [">", 10]}]}
    assert on_body(policy, {"price": 10.5}) is True
    assert on_body(policy, {"price": 11}) is True
    assert on_body(policy, {"price": 10}) is False
    assert on_body(policy, {"price": "10.5"}) is False
    assert on_body(policy, {"price": True}) is False
    assert on_body(policy, {"price": [1, 2, 30]}) is True


def test_numbers_beyond_a_float_compare_as_infinities():
    for rule, big, small in (([">", 0], True, False), ([">=", 5], True, False), (["<", 0], False, True),
                             ([">", 0, "<", 10], False, False)):
        policy = {"n": [{"numeric": rule}]}
        assert on_headers(policy, ("n", "1" * 400)) is big, rule
        assert on_headers(policy, ("n", "1e400")) is big, rule
        assert on_headers(policy, ("n", "-1e400")) is small, rule
        assert on_body(policy, b'{"n": 1e400}') is big, rule
        assert on_body(policy, b'{"n": -1e400}') is small, rule


def test_numeric_given_as_a_string_header():
    policy = {"attr1": [{"numeric": [">", 0, "<=", 100]}]}  # AWS-recorded: Number "99" passes, "111" does not
    assert on_headers(policy, ("attr1", "99")) is True
    assert on_headers(policy, ("attr1", "111")) is False
    assert on_headers(policy, ("attr1", "ninety-nine")) is False


# -- exists ---------------------------------------------------------------------------------------------------------

def test_exists_true_and_false():  # SNS guide, "Key matching"; AWS-recorded test_exists_filter_policy
    assert on_headers({"store": [{"exists": True}]}, ("store", "99"), ("def", "99")) is True
    assert on_headers({"store": [{"exists": True}]}, ("attr1", "111")) is False
    assert on_headers({"store": [{"exists": False}]}, ("def", "99")) is True
    assert on_headers({"store": [{"exists": False}]}, ("store", "99"), ("def", "99")) is False
    assert on_body({"store": [{"exists": True}]}, {"store": "fans"}) is True
    assert on_body({"store": [{"exists": True}]}, {"customer_interests": ["baseball"]}) is False
    assert on_body({"store": [{"exists": False}]}, {"customer_interests": ["baseball"]}) is True


def test_a_header_that_is_not_utf8_counts_as_absent():  # SNS skips Binary attributes
    assert on_headers({"blob": [{"exists": True}]}, ("blob", b"\xff\xfe")) is False
    assert on_headers({"blob": [{"exists": False}]}, ("blob", b"\xff\xfe")) is True
    assert on_headers({"tag": ["a"]}, ("tag", b"\xff"), ("tag", "a")) is True


def test_a_header_without_a_value_counts_as_absent():  # Kafka allows a null header value; SNS has no such thing
    assert compile_policy({"tag": [{"exists": True}]}).matches([("tag", None)], b"") is False
    assert compile_policy({"tag": [{"exists": False}]}).matches([("tag", None)], b"") is True
    assert compile_policy({"tag": ["a"]}).matches([("tag", None), ("tag", memoryview(b"a"))], b"") is True


def test_exists_on_the_body_counts_scalars_only():
    policy = {"a": [{"exists": True}]}
    assert on_body(policy, {"a": None}) is True
    assert on_body(policy, {"a": [1]}) is True
    assert on_body(policy, {"a": []}) is False  # an empty array holds no value
    assert on_body(policy, {"a": {"b": 1}}) is False  # an object is not a value


# -- AND, OR, $or ---------------------------------------------------------------------------------------------------

def test_keys_are_anded_and_values_ored():  # SNS guide, "AND/OR logic"
    policy = {"customer_interests": ["rugby", "football"], "price_usd": [{"numeric": [">", 100]}]}
    assert on_headers(policy, ("customer_interests", "football"), ("price_usd", "150")) is True
    assert on_headers(policy, ("customer_interests", "rugby"), ("price_usd", "50")) is False
    assert on_headers(policy, ("customer_interests", "rugby")) is False
    assert on_headers(policy, ("price_usd", "150"), ("unrelated", "x")) is False


def test_or_operator_on_headers():  # SNS guide, "OR operator": "source" && ("metricName" || "namespace")
    policy = {"source": ["aws.cloudwatch"], "$or": [{"metricName": ["CPUUtilization"]}, {"namespace": ["AWS/EC2"]}]}
    assert on_headers(policy, ("source", "aws.cloudwatch"), ("metricName", "CPUUtilization")) is True
    assert on_headers(policy, ("source", "aws.cloudwatch"), ("namespace", "AWS/EC2")) is True
    assert on_headers(policy, ("source", "aws.cloudwatch"), ("namespace", "AWS/ES")) is False
    assert on_headers(policy, ("metricName", "CPUUtilization")) is False


def test_nested_or_branches():  # SNS guide: ("source" && "metricName") || ("source" && "metricType" && ...)
    policy = {"source": ["aws.cloudwatch"],
              "$or": [{"metricName": ["CPUUtilization", "ReadLatency"]},
                      {"metricType": ["MetricType"], "$or": [{"metricId": [1234, 4321]}, {"spaceId": [1000]}]}]}
    assert compile_policy(policy).combinations == 2 + 2 + 1
    assert on_headers(policy, ("source", "aws.cloudwatch"), ("metricType", "MetricType"), ("spaceId", "1000")) is True
    assert on_headers(policy, ("source", "aws.cloudwatch"), ("metricType", "MetricType")) is False
    assert on_headers(policy, ("source", "aws.cloudwatch"), ("metricId", "1234")) is False


def test_dollar_or_that_is_not_an_or_is_an_ordinary_key():  # SNS guide: fewer than two objects, or values
    assert on_headers({"$or": ["a", "b"]}, ("$or", "b")) is True
    assert on_headers({"$or": ["a", "b"]}, ("a", "a")) is False


def test_or_on_the_body_inside_a_nested_key():  # the policy of LocalStack's test_filter_policy_on_message_body_or
    policy = {"$or": [{"metricName": ["CPUUtilization", "ReadLatency"]}, {"namespace": ["AWS/EC2", "AWS/ES"]}],
              "detail": {"scope": ["Service"],
                         "$or": [{"source": ["aws.cloudwatch"]}, {"type": ["CloudWatch Alarm State Change"]}]}}
    failing = [
        {"metricName": "CPUUtilization",
         "detail": {"scope": "aws.cloudwatch", "type": "CloudWatch Alarm State Change"}},
        {"metricName": "CPUUtilization", "detail": {"scope": "Service", "type": "CPUUtilization"}},
        {"metricName": "CPUUtilization", "detail": {"type": "CloudWatch Alarm State Change"}},
        {"metricName": "CPUUtilization", "detail": {"scope": "Service"}},
        {"metricName": "CPUUtilization", "scope": "Service"},
        # the values swapped between the two keys of the top-level $or: neither branch holds
        {"metricName": "AWS/EC2", "detail": {"scope": "Service", "type": "CloudWatch Alarm State Change"}},
        {"namespace": "CPUUtilization", "detail": {"scope": "Service", "type": "CloudWatch Alarm State Change"}},
    ]
    passing = [
        {"metricName": "CPUUtilization", "detail": {"scope": "Service", "source": "aws.cloudwatch"}},
        {"metricName": "ReadLatency", "detail": {"scope": "Service", "source": "aws.cloudwatch"}},
        {"namespace": "AWS/EC2", "detail": {"scope": "Service", "source": "aws.cloudwatch"}},
        {"namespace": "AWS/ES", "detail": {"scope": "Service", "source": "aws.cloudwatch"}},
        {"metricName": "CPUUtilization", "detail": {"scope": "Service", "type": "CloudWatch Alarm State Change"}},
    ]
    assert [on_body(policy, m) for m in failing] == [False] * 7
    assert [on_body(policy, m) for m in passing] == [True] * 5
    assert compile_policy(policy, "MessageBody").combinations == (2 + 2) * (1 * 2) * (1 * 2 + 1 * 2)


# -- nested keys in the body ----------------------------------------------------------------------------------------

def test_nested_keys_with_prefix_and_exists_false():  # AWS-recorded test_filter_policy_on_message_body
    policy = {"object": {"key": [{"prefix": "auto-"}, "hardcodedvalue"], "nested_key": [{"exists": False}]},
              "test": [{"exists": False}]}
    assert on_body(policy, {"object": {"key": "auto-test"}}) is True
    assert on_body(policy, {"object": {"key": "hardcodedvalue"}}) is True
    for record in ({"object": {"key": "test-auto"}}, {"object": {"key": "auto-test"}, "test": "just-exists"},
                   {"object": {"key": "auto-test", "nested_key": "just-exists"}}, {"object": {"test": "auto-test"}},
                   {"test": "auto-test"}):
        assert on_body(policy, record) is False, record
    assert on_body(policy, b"Regular string message") is False
    assert on_body(policy, json.dumps("a JSON string, not an object").encode()) is False


def test_arrays_of_objects_are_walked_through():  # AWS-recorded test_filter_policy_on_message_body_array_of_object
    policy = {"Records": {"s3": {"object": {"key": [{"prefix": "auto-"}]}},
                          "eventName": [{"prefix": "ObjectCreated:"}]}}

    def s3_event(event_name: str, key: str) -> dict:
        return {"Records": [{"eventSource": "aws:s3", "eventName": event_name,
                             "s3": {"bucket": {"name": "insurance"}, "object": {"key": key, "size": 17}}}]}

    assert on_body(policy, s3_event("ObjectCreated:Put", "auto-insurance-2314.xml")) is True
    assert on_body(policy, s3_event("ObjectRemoved:Delete", "auto-insurance-2314.xml")) is False
    assert on_body(policy, s3_event("ObjectCreated:Put", "home-insurance-2314.xml")) is False
    several = {"Records": [
        {"eventName": "ObjectCreated:Put", "s3": {"object": [[{"key": "auto-insurance-2314.xml", "size": 17}]]}},
        {"eventName": "ObjectRemoved:Delete", "s3": {"object": {"key": "home-insurance-2314.xml", "size": 17}}},
    ]}
    assert on_body(policy, several) is True


def test_array_values_route_to_several_subscriptions():  # AWS-recorded test_filter_policy_on_message_body_array_attr
    queue1, queue2 = {"headers": {"route-to": ["queue1"]}}, {"headers": {"route-to": ["queue2"]}}
    records = [{"headers": {"route-to": r}} for r in (["queue3"], ["queue1"], ["queue2"], ["queue1", "queue2"])]
    assert [on_body(queue1, r) for r in records] == [False, True, False, True]
    assert [on_body(queue2, r) for r in records] == [False, False, True, True]


def test_a_dotted_key_is_one_property_name():  # departure: AWS also reads "a.b" as the path a -> b
    policy = {"object.nested": ["string.value"]}
    assert on_body(policy, {"object.nested": "string.value"}) is True
    assert on_body(policy, {"object": {"nested": "string.value"}}) is False


def test_the_body_must_be_utf8_json_object():
    policy = {"a": [{"exists": False}]}
    assert on_body(policy, {"b": 1}) is True
    for raw in (b"not json", b"[1, 2]", b"\xff{}", b'{"a": NaN}', b""):
        assert on_body(policy, raw) is False, raw


def test_the_empty_policy_matches_everything():
    assert compile_policy({}).matches([], b"") is True
    assert compile_policy("{}", "MessageBody").matches([], b"not json") is True


def test_the_compiled_policy_keeps_its_own_copy():
    policy = {"store": ["a"], "price": [{"numeric": [">", 1]}]}
    compiled = compile_policy(policy)
    policy["store"].append("b")
    policy["price"][0]["numeric"][1] = 1000
    assert compiled.matches([("store", b"b"), ("price", b"5")], b"") is False
    assert compiled.matches([("store", b"a"), ("price", b"5")], b"") is True
    assert compiled.policy == {"store": ["a"], "price": [{"numeric": [">", 1]}]}
