"""A bounded history of state changes, shared by the worker and the health state machines.

A change is ``(at_s, from_state, to_state, reason)`` over any string-valued ``Enum``; its JSON form is
``{"at", "from", "to", "reason"}`` (the HTTP API's). Pure: time is passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any, Generic, NamedTuple, TypeVar

HISTORY_LIMIT = 50
"""Changes kept per record (the oldest are dropped first)."""

S = TypeVar("S", bound=Enum)


class StateChange(NamedTuple, Generic[S]):
    """One state change: when (seconds, caller's clock), from, to, and why."""

    at_s: float
    from_state: S
    to_state: S
    reason: str


def appended(
    history: tuple[StateChange[S], ...], change: StateChange[S], limit: int = HISTORY_LIMIT
) -> tuple[StateChange[S], ...]:
    """``history`` with ``change`` at the end, keeping the last ``limit`` changes."""
    return (*history, change)[-limit:]


def history_to_json(history: Iterable[StateChange[S]]) -> list[dict[str, Any]]:
    """JSON-ready list, oldest first."""
    return [
        {"at": h.at_s, "from": h.from_state.value, "to": h.to_state.value, "reason": h.reason}
        for h in history
    ]


def history_from_json(rows: Iterable[Mapping[str, Any]], state: type[S]) -> tuple[StateChange[S], ...]:
    """Inverse of :func:`history_to_json`. Raises ``KeyError`` on a missing key and ``ValueError`` on a
    state that ``state`` does not name."""
    return tuple(
        StateChange(float(h["at"]), state(h["from"]), state(h["to"]), str(h["reason"])) for h in rows
    )
