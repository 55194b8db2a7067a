"""Small integer expressions that Python evaluates and the Lua scripts embed: one definition, two runtimes.

A rule that both the in-memory code and a Redis script apply (the queue score, the lost-lease budget) is
written once as an :class:`Expr` in :mod:`orchestrator.core.jobs`; Python calls :meth:`Expr.evaluate` and
:mod:`orchestrator.store.scripts` renders :meth:`Expr.lua` into the script text, so the two cannot drift.
Only operators whose meaning is the same in Python and in Redis' Lua (integers exact below 2**53) are
offered.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass

_OPS: dict[str, tuple[Callable[[int, int], int | bool], str]] = {
    "+": (operator.add, "+"),
    "-": (operator.sub, "-"),
    "*": (operator.mul, "*"),
    "<": (operator.lt, "<"),
    "<=": (operator.le, "<="),
    ">": (operator.gt, ">"),
    ">=": (operator.ge, ">="),
    "==": (operator.eq, "=="),
}


class Expr:
    """An expression over named integer inputs."""

    def evaluate(self, values: Mapping[str, int]) -> int | bool:
        """The value for these inputs (every input the expression names must be given)."""
        raise NotImplementedError

    def lua(self, bindings: Mapping[str, str]) -> str:
        """Lua source of the expression, each input replaced by the Lua expression bound to its name."""
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class Num(Expr):
    """An integer constant."""

    value: int

    def evaluate(self, values: Mapping[str, int]) -> int:
        return self.value

    def lua(self, bindings: Mapping[str, str]) -> str:
        return str(int(self.value))


@dataclass(frozen=True, eq=False)
class Var(Expr):
    """A named input."""

    name: str

    def evaluate(self, values: Mapping[str, int]) -> int:
        return int(values[self.name])

    def lua(self, bindings: Mapping[str, str]) -> str:
        return f"({bindings[self.name]})"


@dataclass(frozen=True, eq=False)
class Op(Expr):
    """``left <op> right`` with one of the operators both runtimes share."""

    op: str
    left: Expr
    right: Expr

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"operator {self.op!r} is not one of {sorted(_OPS)}")

    def evaluate(self, values: Mapping[str, int]) -> int | bool:
        return _OPS[self.op][0](int(self.left.evaluate(values)), int(self.right.evaluate(values)))

    def lua(self, bindings: Mapping[str, str]) -> str:
        return f"({self.left.lua(bindings)} {_OPS[self.op][1]} {self.right.lua(bindings)})"
