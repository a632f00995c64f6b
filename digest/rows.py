"""Reading many rows at once (CSV lines, feed entries): good ones kept, each bad one reported by place."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from digest.domain import RowError
from digest.errors import InvalidInput

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Parsed(Generic[T]):
    items: list[T]
    errors: list[RowError]
    places: list[str]  # where each item stood ("line 4"), in step with items


class Collector(Generic[T]):
    """Gathers good items and reports each bad one by where it stood; the first of a key wins."""

    def __init__(self, unit: str, key: Callable[[T], str]) -> None:
        self._unit = unit  # "entry", "line"
        self._key = key
        self._first_seen: dict[str, int] = {}
        self.parsed: Parsed[T] = Parsed([], [], [])

    def add(self, number: int, make: Callable[[], T]) -> None:
        where = f"{self._unit} {number}"
        try:
            item = make()
        except InvalidInput as exc:
            self.parsed.errors.append(RowError(where, str(exc)))
            return
        key = self._key(item)
        if key in self._first_seen:
            first = self._first_seen[key]
            self.parsed.errors.append(RowError(where, f"duplicate of {self._unit} {first}"))
            return
        self._first_seen[key] = number
        self.parsed.items.append(item)
        self.parsed.places.append(where)
