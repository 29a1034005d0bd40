"""`record`: a frozen dataclass that is cheaper to define.

A dataclass compiles each method it generates from source when its class is created (one
`exec` each). A frozen one with `eq` gets six (`__init__`, `__repr__`, `__eq__`, `__hash__`,
`__setattr__`, `__delattr__`); on the 2-core test machine the 13 classes of the policy model
took about 15 ms to create, paid by every process that imports it (`CleanCoin-sandbox run`,
CleanCoin-node, the zygote). `record` lets dataclasses generate only what depends on the
fields' order and defaults (`__init__`) and what makes the class frozen, and gives the rest
from `Record`, written once: comparison, hash and repr as dataclasses would generate them
(tests/test_records.py compares each against a real frozen dataclass of the same fields).
What dataclasses offers besides (`fields`, `replace`, `asdict`, pickling) is unchanged; only
`__dataclass_params__` says eq=False, repr=False (nothing here reads it).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from operator import attrgetter

TYPE_CHECKING = False     # not typing's: the connect broker imports this and never typing

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar
    T = TypeVar("T")


class Record:
    """Comparison, hash and repr of a `record` class, as a frozen dataclass has them: equal
    only to an instance of the very same class with equal compared fields, hashed as the
    tuple of its hashed fields, shown as `Name(field=value, ...)`."""

    __slots__ = ()
    #: Set by `record` for each class: the tuple of the fields compared, and of those hashed
    #: (`_values`), and the names of the fields shown.
    _compared: Callable[[object], tuple[object, ...]]
    _hashed: Callable[[object], tuple[object, ...]]
    _shown: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self._compared(self) == self._compared(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._hashed(self))

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._shown)
        return f"{self.__class__.__qualname__}({shown})"


def record(cls: type[T]) -> type[T]:
    """`@dataclass(frozen=True)` for a class deriving from `Record` (module docstring)."""
    if not issubclass(cls, Record):
        raise TypeError(f"{cls.__qualname__}: a record derives from Record")
    for own in ("__eq__", "__hash__", "__repr__"):
        if own in cls.__dict__:
            raise TypeError(f"{cls.__qualname__} defines {own}: make it a plain dataclass")
    made = dataclass(frozen=True, eq=False, repr=False)(cls)
    every = fields(made)
    made._compared = _values(tuple(f.name for f in every if f.compare))
    made._hashed = _values(tuple(f.name for f in every if (f.compare if f.hash is None else f.hash)))
    made._shown = tuple(f.name for f in every if f.repr)
    return made


def _values(names: tuple[str, ...]) -> attrgetter | staticmethod:
    """A function giving the tuple of these attributes (the tuple a dataclass compares and
    hashes): operator.attrgetter, which builds it in C, for two names or more."""
    if len(names) >= 2:
        return attrgetter(*names)          # not a function: no staticmethod needed
    if names:
        one = attrgetter(names[0])
        return staticmethod(lambda value: (one(value),))
    return staticmethod(lambda value: ())
