# Which partition a record goes to: Kafka's default rule for keyed records, so a key lands where a Java,
# kafka-python or aiokafka producer would put it. Pure functions; no I/O.
from __future__ import annotations

from functools import lru_cache

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_SEED = 0x9747B28C


def murmur2(data: bytes) -> int:
    """MurmurHash2 as Kafka's ``Utils.murmur2`` computes it, as an unsigned 32-bit int.

    Vectors (Kafka ``UtilsTest``, kafka-python): ``b"21"`` -> 0xc5f2f8ec, ``b""`` -> 0x106e08d9.
    """
    length = len(data)
    h = (_SEED ^ length) & _MASK
    n4 = length & ~3
    for i in range(0, n4, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[n4 + 2] << 16
    if rest >= 2:
        h ^= data[n4 + 1] << 8
    if rest >= 1:
        h ^= data[n4]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


@lru_cache(maxsize=65536)
def _positive_hash(key: bytes) -> int:
    return murmur2(key) & 0x7FFFFFFF


def partition_for_key(key: bytes, partitions: int) -> int:
    """Kafka's default keyed partitioner: ``(murmur2(key) & 0x7fffffff) % partitions`` (mask, not ``abs``).

    An empty key is a key like any other (only ``None`` means "no key"). Raises ``ValueError`` if
    ``partitions < 1``.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    return _positive_hash(bytes(key)) % partitions
