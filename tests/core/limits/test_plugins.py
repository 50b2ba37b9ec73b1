# Plug-ins only from the operator (issue 10 finding 8): a policy may name the built-ins, names an embedding program
# registered, the operator's [limit_algorithms] table and "millpond.limits" entry points; any other name, in any
# spelling, is refused with INVALID_CONFIG and nothing is imported. And any malformed policy at all is refused with
# INVALID_CONFIG naming what is wrong, never another exception.
from __future__ import annotations

import sys
import uuid
from importlib import metadata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from millpond.broker.config import load_config
from millpond.broker.core.engine import Engine
from millpond.broker.core.limits import PolicySet, registry
from millpond.broker.core.limits.api import check_policies
from millpond.broker.core.limits.registry import Algorithms, check_plugins
from millpond.broker.wire.errors import InvalidConfigError
from examples.limits_plugin import CappedLeakyBucket

PLUGIN = "examples.limits_plugin:CappedLeakyBucket"


@pytest.fixture
def trap(tmp_path, monkeypatch):
    """An importable module whose import leaves a file behind: (module name, marker path)."""
    name = f"trap_{uuid.uuid4().hex}"
    marker = tmp_path / "imported"
    (tmp_path / f"{name}.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "from examples.limits_plugin import CappedLeakyBucket as Limiter\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return name, marker


def spellings(module: str) -> list[str]:
    return [f"{module}:Limiter", f"{module}:Limiter.__init__", f"{module}:", module, f"{module}.sub:X",
            f" {module}:Limiter", f"{module}:Limiter ", f"{module}:Limiter\n"]


@pytest.mark.parametrize("configured", [{}, {"capped": PLUGIN}])
def test_no_spelling_of_an_unregistered_module_is_imported(trap, configured, monkeypatch):
    module, marker = trap
    looked_up = []
    real = registry.metadata.entry_points
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: looked_up.append(group) or real(group=group))
    algorithms = Algorithms(configured)
    for name in spellings(module):
        with pytest.raises(InvalidConfigError, match="registered by the broker's operator"):
            PolicySet([{"name": "p", "algorithm": name}], algorithms)
        with pytest.raises(InvalidConfigError, match="registered by the broker's operator"):
            check_policies([{"name": "p", "algorithm": name}], algorithms)
    assert not marker.exists() and module not in sys.modules
    # an entry point is looked up only by a plain name, which no import path is
    assert len(looked_up) == 2 * sum(":" not in n for n in spellings(module))  # PolicySet, check_policies


def test_the_operators_plugin_is_imported_once_at_start_and_named_by_name_or_spec(trap):
    module, marker = trap
    spec = f"{module}:Limiter"
    algorithms = Algorithms({"mine": spec})
    assert not marker.exists()  # declaring it imports nothing
    algorithms.load_all()
    assert marker.exists() and module in sys.modules
    params = {"rate": 1, "burst": 1, "cap": 5, "period_s": 60}
    for name in ("mine", spec):
        ps = PolicySet([{"name": "p", "algorithm": name, "params": params}], algorithms)
        assert type(ps._active["p"].algorithm) is CappedLeakyBucket
    # another broker's table is its own
    with pytest.raises(InvalidConfigError, match="registered by the broker's operator"):
        PolicySet([{"name": "p", "algorithm": "mine", "params": params}])


def test_entry_points_of_the_group_are_found_by_their_name(monkeypatch):
    ep = metadata.EntryPoint(name="capped", value=PLUGIN, group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: [ep] if group == ep.group else [])
    assert Algorithms().resolve("capped") is CappedLeakyBucket
    with pytest.raises(registry.UnknownAlgorithm, match="registered by the broker's operator"):
        Algorithms().resolve(PLUGIN)  # the entry point's value is not a name a client may use


@pytest.mark.parametrize("table, words", [
    (["capped"], "must be a table"),
    ({"": PLUGIN}, "1-100 characters"),
    ({"a b": PLUGIN}, "1-100 characters"),
    ({"a:b": PLUGIN}, "1-100 characters"),
    ({"x" * 101: PLUGIN}, "1-100 characters"),
    ({1: PLUGIN}, "1-100 characters"),
    ({"leaky_bucket": PLUGIN}, "built-in"),
    ({"capped": "examples.limits_plugin"}, "package.module:ClassName"),
    ({"capped": "examples limits:X"}, "package.module:ClassName"),
    ({"capped": ":X"}, "package.module:ClassName"),
    ({"capped": 5}, "package.module:ClassName"),
])
def test_a_malformed_plugin_table_is_refused_naming_the_entry(table, words):
    with pytest.raises(ValueError, match=words):
        check_plugins(table)


def test_the_config_file_and_engine_take_the_operators_table(tmp_path):
    path = tmp_path / "millpond.toml"
    path.write_text(f'[limit_algorithms]\ncapped = "{PLUGIN}"\n\n[[limits]]\nname = "plan"\nalgorithm = "capped"\n'
                    'params = {rate = 1, burst = 1, cap = 10}\n')
    config = load_config(path, data_dir=str(tmp_path / "data"))
    assert config.limit_algorithms == {"capped": PLUGIN}
    engine = Engine.for_directory(config, tmp_path / "data")
    engine.limits.open()
    assert type(engine.limits.policies._active["plan"].algorithm) is CappedLeakyBucket
    with pytest.raises(InvalidConfigError, match="limit_algorithms"):
        load_config(None, limit_algorithms=["capped"])
    with pytest.raises(InvalidConfigError, match="'capped'.*No module named 'no_such_module'"):
        Engine.for_directory(config.replace(limits=(), limit_algorithms={"capped": "no_such_module:X"}), tmp_path)
    with pytest.raises(InvalidConfigError, match="package.module:ClassName"):
        Engine.for_directory(config.replace(limits=(), limit_algorithms={"capped": "not a spec"}), tmp_path)


# -- any malformed policy is INVALID_CONFIG --------------------------------------------------------------------
LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=5),
                 st.binary(max_size=3))
VALUE = st.recursive(LEAF, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.one_of(st.text(max_size=3), st.integers(), st.binary(max_size=2)), inner, max_size=3), max_leaves=6)
PARAMS = st.dictionaries(st.sampled_from(["rate", "burst", "queue", "limit", "window_s", "debt"]) | st.integers(),
                         VALUE, max_size=4)
KNOWN = st.fixed_dictionaries({"name": st.just("p") | VALUE}, optional={
    "scope": st.sampled_from(["client", "global", "topic:x*"]) | VALUE,
    "unit": st.sampled_from(["records", "bytes"]) | VALUE,
    "algorithm": st.sampled_from(sorted(registry.BUILTIN)) | VALUE,
    "params": PARAMS | VALUE, "mode": st.sampled_from(["reject", "shape"]) | VALUE, "max_keys": VALUE})
ANY_KEYS = st.dictionaries(st.sampled_from(["scope", "params", "unit"]) | st.integers() | st.text(max_size=3)
                           | st.binary(max_size=2), VALUE, max_size=4).map(lambda d: {**d, "name": "p"})


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(KNOWN, ANY_KEYS, VALUE))
def test_any_policy_at_all_is_applied_or_refused_as_invalid_config(policy):
    try:
        ps = PolicySet([policy])
    except InvalidConfigError as exc:
        assert len(exc.message) <= 500 and "Traceback" not in exc.message
        return
    for t in (1, 2):
        ps.admit(t * 10**9, client_id="a", topic="x1", records=3, nbytes=10)
    assert [p["name"] for p in ps.to_dicts()] == ["p"]
