# The engine's shaping path: a producer's batch never overtakes one of its batches held by a shaping policy.
from __future__ import annotations

from millpond.broker.config import load_config
from millpond.broker.core.engine import Context, Engine, Shaped
from millpond.broker.core.log import LogManager
from millpond.broker.wire.batch import encode_batch

T0_MS = 1_700_000_000_000


def test_a_batch_behind_a_held_one_is_held_too_even_when_the_held_ones_time_has_come(tmp_path):
    config = load_config(None, data_dir=str(tmp_path), fsync="never", default_limit_records_per_s=0)
    log = LogManager(tmp_path, defaults=config.topic_defaults, batch_bytes_max=config.batch_bytes_max,
                     partitions_max=config.partitions_max, fsync_mode="never")
    engine = Engine(config, log)
    engine.open(T0_MS)
    try:
        engine.create_topic({"name": "t"}, Context(T0_MS, 0.0))
        engine.limits.policies.set({"name": "shape", "scope": "client", "unit": "records", "mode": "shape",
                                    "algorithm": "leaky_bucket", "params": {"rate": 10, "burst": 1, "queue": 100}})

        def produce(seq: int, now: float):
            blob = encode_batch([(T0_MS, None, b"v%d" % seq, None)], producer_id=9, producer_epoch=0,
                                base_sequence=seq)
            return engine.produce({"topic": "t", "partition": 0, "batch": blob}, Context(T0_MS, now, "app"))

        first = produce(0, 0.0)
        assert not isinstance(first, Shaped) and first.answer["base_offset"] == 0  # the burst
        held = produce(1, 0.0)
        assert isinstance(held, Shaped) and held.delay_s == 0.1
        # at 0.2 s the limiter would admit at once, and the held batch's time has passed, but its timer has not
        # run yet (a busy event loop): the next batch must still wait behind it
        behind = produce(2, 0.2)
        assert isinstance(behind, Shaped)
        assert engine.complete(held, T0_MS).answer["base_offset"] == 1
        assert engine.complete(behind, T0_MS).answer["base_offset"] == 2
    finally:
        log.close()
