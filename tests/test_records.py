"""sandbox/records.py: a `record` class compares, hashes, shows itself and stays frozen as
the frozen dataclass it replaces would (issue #16: the model's classes cost a third of
their creation time)."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from cleancoin.sandbox import errors, helpers, kernel, landlock, model, plan, plan_compiler, seccomp, stdio, steps
from cleancoin.sandbox.policy_files import shipped_policy
from cleancoin.sandbox.policy_loader import load_policy
from cleancoin.sandbox.records import Record, record

MODULES = (errors, helpers, kernel, landlock, model, plan, plan_compiler, seccomp, stdio, steps)


def _twin(cls: type) -> type:
    """A real @dataclass(frozen=True) with the same fields, name and defaults."""
    specs = []
    for f in dataclasses.fields(cls):
        spec = dataclasses.field(default=f.default, default_factory=f.default_factory, repr=f.repr,
                                 hash=f.hash, compare=f.compare)
        specs.append((f.name, f.type, spec))
    twin = dataclasses.make_dataclass(cls.__name__, specs, frozen=True)
    twin.__qualname__ = cls.__qualname__
    return twin


def _records(value: object, seen: dict[int, object]) -> None:
    """Every Record instance reachable from `value`, by id."""
    if isinstance(value, Record):
        if id(value) in seen:
            return
        seen[id(value)] = value
        for f in dataclasses.fields(value):
            _records(getattr(value, f.name), seen)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _records(item, seen)
    elif isinstance(value, dict):
        for item in value.values():
            _records(item, seen)


def test_every_frozen_class_on_runs_path_is_a_record() -> None:
    classes = [c for m in MODULES for c in vars(m).values()
               if isinstance(c, type) and dataclasses.is_dataclass(c) and c.__module__ == m.__name__]
    frozen = [c for c in classes if c.__dataclass_params__.frozen]
    assert frozen and all(issubclass(c, Record) for c in frozen), [c for c in frozen if not issubclass(c, Record)]


@pytest.mark.parametrize("name", ["node", "wallet", "strict"])
def test_records_behave_as_frozen_dataclasses(name: str) -> None:
    policy = load_policy(shipped_policy(name))
    found: dict[int, object] = {}
    _records(policy, found)
    kinds = {type(v) for v in found.values()}
    assert {model.Policy, model.Grant, model.SeccompRule, errors.SourceRef} <= kinds
    twins = {cls: _twin(cls) for cls in kinds}
    for value in found.values():
        values = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        twin = twins[type(value)](**values)
        assert repr(value) == repr(twin)
        assert hash(value) == hash(twin)
        same = dataclasses.replace(value)
        assert same == value and not same != value and hash(same) == hash(value)
        assert value != twin and twin != value                  # another class: never equal
        assert pickle.loads(pickle.dumps(value)) == value
        first = dataclasses.fields(value)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, first, getattr(value, first))
        with pytest.raises(dataclasses.FrozenInstanceError):
            delattr(value, first)
    # A field changed: unequal, as the twin's are.
    grant = next(v for v in found.values() if type(v) is model.Grant)
    other = dataclasses.replace(grant, value=grant.value + "x")
    assert other != grant and (_twin(model.Grant)(**vars(other)) != _twin(model.Grant)(**vars(grant)))


def test_fields_left_out_of_comparison_hash_and_repr_stay_out() -> None:
    @record
    class Sample(Record):
        """A record with every kind of field."""

        a: int
        b: int = dataclasses.field(default=0, compare=False)
        c: int = dataclasses.field(default=0, repr=False)
        d: int = dataclasses.field(default=0, hash=False)

    twin = _twin(Sample)
    for one, two in (((1, 2, 3, 4), (1, 9, 3, 4)), ((1, 2, 3, 4), (1, 2, 3, 5)), ((1, 2, 3, 4), (2, 2, 3, 4))):
        assert (Sample(*one) == Sample(*two)) == (twin(*one) == twin(*two))
        assert hash(Sample(*one)) == hash(twin(*one)) and repr(Sample(*one)) == repr(twin(*one))


def test_records_of_one_field_and_of_none_compared() -> None:
    @record
    class One(Record):
        """One field."""

        a: str

    @record
    class Uncompared(Record):
        """No field compared."""

        a: int = dataclasses.field(default=0, compare=False)

    for cls, one, two in ((One, ("x",), ("y",)), (Uncompared, (1,), (2,))):
        twin = _twin(cls)
        assert (cls(*one) == cls(*two)) == (twin(*one) == twin(*two))
        assert cls(*one) == cls(*one) and hash(cls(*one)) == hash(twin(*one))
        assert repr(cls(*one)) == repr(twin(*one))


def test_a_record_must_derive_from_record_and_keep_its_methods() -> None:
    with pytest.raises(TypeError, match="derives from Record"):
        record(type("Loose", (), {"__annotations__": {"a": int}}))
    with pytest.raises(TypeError, match="defines __eq__"):
        record(type("Own", (Record,), {"__annotations__": {"a": int}, "__eq__": lambda s, o: True}))
