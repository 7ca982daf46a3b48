"""A seeded mutational fuzzer: every case is a valid seed changed by a few random edits (or,
now and then, random bytes), drawn from ``random.Random(<target name>)``, so a run is the same
on every machine and a failure names the exact input. Cheaper than hypothesis per case, which
is what lets CI afford ten thousand cases per target.

``FUZZ_CASES`` (environment) raises the count for a longer local run; CI uses the default.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator, Sequence

__all__ = ["CASES", "cases", "run_cases"]

CASES = int(os.environ.get("FUZZ_CASES", "10000"))
_INTERESTING = (0x00, 0x01, 0x3F, 0x40, 0x7F, 0x80, 0xBF, 0xC0, 0xFE, 0xFF)


def _mutate(rng: random.Random, data: bytearray, seeds: Sequence[bytes]) -> None:
    size = len(data)
    choice = rng.randrange(8)
    at = rng.randrange(size + 1)
    if choice == 0 and size:  # flip a bit
        data[at % size] ^= 1 << rng.randrange(8)
    elif choice == 1 and size:  # an interesting byte
        data[at % size] = rng.choice(_INTERESTING)
    elif choice == 2:  # truncate
        del data[at:]
    elif choice == 3:  # delete a slice
        del data[at : at + rng.randrange(1, 17)]
    elif choice == 4:  # insert random bytes
        data[at:at] = rng.randbytes(rng.randrange(1, 17))
    elif choice == 5 and size:  # duplicate a slice
        start = rng.randrange(size)
        data[at:at] = data[start : start + rng.randrange(1, 33)]
    elif choice == 6:  # splice with another seed
        other = rng.choice(seeds)
        cut = rng.randrange(len(other) + 1)
        data[at:] = other[cut:]
    else:  # a multi-byte integer field set to an extreme
        value = rng.choice((0, 0xFF, 0x3FFF, 0xFFFF, 0xFFFFFFFF, 0x3FFFFFFFFFFFFFFF))
        data[at : at + 8] = value.to_bytes(8, "big")


def cases(name: str, seeds: Sequence[bytes], count: int = CASES) -> Iterator[bytes]:
    """``count`` inputs for target ``name``: 1 in 20 random bytes, the rest mutated seeds."""
    rng = random.Random(name)
    for _ in range(count):
        if rng.randrange(20) == 0:
            yield rng.randbytes(rng.randrange(0, 200))
            continue
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
            _mutate(rng, data, seeds)
        yield bytes(data)


def run_cases(
    name: str,
    target: Callable[[bytes], object],
    seeds: Sequence[bytes],
    allowed: tuple[type[BaseException], ...],
    count: int = CASES,
) -> dict[str, int]:
    """Run ``target`` on every case; any exception outside ``allowed`` fails with the input.
    Returns how often each outcome happened (``ok`` or the exception's type name)."""
    for seed in seeds:
        target(seed)  # the seeds are valid: the cases start from real messages
    outcomes: dict[str, int] = {}
    for index, data in enumerate(cases(name, seeds, count)):
        try:
            target(data)
        except allowed as exc:
            kind = type(exc).__name__
        except Exception as exc:  # the point: report what escaped, with the input
            raise AssertionError(
                f"{name} case {index}: {type(exc).__name__} escaped for input "
                f"{data[:512].hex()} ({len(data)} bytes; cases(name) regenerates it)"
            ) from exc
        else:
            kind = "ok"
        outcomes[kind] = outcomes.get(kind, 0) + 1
    return outcomes
