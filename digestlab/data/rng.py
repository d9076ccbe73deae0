"""The random numbers every corpus generator draws: one splitmix64 stream per document.

Its outputs are fixed by its definition, so a generator that draws only from it (never from
Python's `random`, hash order or float arithmetic) writes the same bytes on every machine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

_MASK64 = (1 << 64) - 1
T = TypeVar("T")


class SplitMix64:
    """A tiny 64-bit generator whose stream is fixed by its definition, on every platform."""

    def __init__(self, seed: int) -> None:
        self.state = seed & _MASK64

    def next_u64(self) -> int:
        """Return the next 64-bit output (Steele, Lea and Flood's splitmix64)."""
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        """Return an integer in [0, n); the modulo bias (n / 2**64) is far below any use here."""
        return self.next_u64() % n

    def between(self, low: int, high: int) -> int:
        """Return an integer in [low, high], both ends included."""
        return low + self.below(high - low + 1)

    def chance(self, percent: int) -> bool:
        """Return True with probability percent / 100."""
        return self.below(100) < percent

    def choice(self, items: Sequence[T]) -> T:
        """Return one element of a non-empty sequence, uniformly."""
        return items[self.below(len(items))]

    def weighted(self, table: Mapping[T, int]) -> T:
        """Return a key of `table` with probability its integer weight / the sum of weights."""
        total = sum(table.values())
        if total <= 0 or min(table.values()) < 0:
            raise ValueError(f"weights must be >= 0 with a positive sum, got {dict(table)}")
        # One draw, walked through the keys in their written order: a table of n weights of 1
        # picks exactly what choice() picks from a sequence of those n keys.
        draw = self.below(total)
        for key, weight in table.items():
            if draw < weight:
                return key
            draw -= weight
        raise AssertionError("unreachable: the draw is below the total weight")

    def shuffle(self, items: list) -> None:
        """Shuffle a list in place (Fisher-Yates)."""
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]


def derive_seed(*parts: int) -> int:
    """A 64-bit seed of its own for each tuple of integers (a run, a stream, an index...): the
    same parts give the same seed everywhere, and different parts unrelated ones."""
    rng = SplitMix64(0)
    for part in parts:
        rng = SplitMix64(rng.next_u64() ^ part)
    return rng.next_u64()
