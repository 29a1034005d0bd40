"""The method cache (sandbox/method_cache.py) and dataclasses without inspect
(sandbox/dataclass_import.py): a class made through the cache, from a fresh compile or from an
entry, has the very methods dataclasses makes without it; an entry is used only when the
package's owner alone could have written it and it is whole; the console script compiles
nothing once its entry is written.

Each test that writes points the cache at a package directory of its own
(`filter_cache.package_dir`), as tests/test_policy_cache.py does.
"""

from __future__ import annotations

import dataclasses
import json
import marshal
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import pytest

from cleancoin.sandbox import filter_cache, method_cache

NOBODY = 65534

#: Classes covering what dataclasses generates: frozen (its __setattr__/__delattr__), order,
#: unsafe_hash, defaults, default_factory, InitVar with __post_init__, kw_only, slots, a
#: field out of the comparison, and a class without a docstring (dataclasses asks inspect).
CLASSES = '''
from __future__ import annotations
import dataclasses
from dataclasses import dataclass, field, InitVar, KW_ONLY

@dataclass(frozen=True)
class Frozen:
    """a record"""
    a: int
    b: str = "x"
    c: tuple = field(default_factory=tuple)

@dataclass(order=True, unsafe_hash=True)
class Ordered:
    """ordered"""
    a: int
    b: list = field(default_factory=list, compare=False, hash=False)

@dataclass
class Post:
    """with __post_init__"""
    a: int
    scale: InitVar[int] = 2
    _: KW_ONLY
    k: int = 5
    def __post_init__(self, scale):
        self.a *= scale

@dataclass(slots=True, kw_only=True)
class Slotted:
    """slots"""
    a: int
    b: int = 1

@dataclass
class NoDoc:
    a: int
'''

GENERATED = ("__init__", "__repr__", "__eq__", "__lt__", "__le__", "__gt__", "__ge__", "__hash__",
             "__setattr__", "__delattr__")



def _make(cache: method_cache.MethodCache | None) -> dict[str, type]:
    """CLASSES made by dataclasses, through `cache` when given (as `activate` arranges)."""
    # A module of its own in sys.modules: dataclasses resolves `InitVar` there.
    module = types.ModuleType("cached_classes")
    namespace = module.__dict__
    sys.modules[module.__name__] = module
    if cache is not None:
        dataclasses.exec = cache.run          # type: ignore[attr-defined]
    try:
        exec(compile(CLASSES, "<classes>", "exec", 0, True), namespace)
    finally:
        if cache is not None:
            del dataclasses.exec
        del sys.modules[module.__name__]
    return {k: v for k, v in namespace.items() if isinstance(v, type) and dataclasses.is_dataclass(v)}


def _methods(cls: type) -> dict[str, object]:
    return {name: cls.__dict__[name] for name in GENERATED if name in cls.__dict__}


def _same_function(a: object, b: object, what: str) -> None:
    if a is None or b is None:
        assert a is b, what
        return
    # __repr__ is wrapped (dataclasses' _recursive_repr): the generated function is inside.
    a, b = getattr(a, "__wrapped__", a), getattr(b, "__wrapped__", b)
    code_a, code_b = a.__code__, b.__code__           # type: ignore[attr-defined]
    # Code objects compare their bytecode, constants, names, flags and line table.
    assert code_a == code_b, what
    assert code_a.co_filename == code_b.co_filename == "<string>", what
    assert code_a.co_flags == code_b.co_flags, what
    assert a.__annotations__ == b.__annotations__, what              # type: ignore[attr-defined]
    assert a.__defaults__ == b.__defaults__, what                    # type: ignore[attr-defined]
    assert a.__kwdefaults__ == b.__kwdefaults__, what                # type: ignore[attr-defined]
    assert a.__qualname__ == b.__qualname__, what                    # type: ignore[attr-defined]
    cells_a = [c.cell_contents for c in a.__closure__ or ()]         # type: ignore[attr-defined]
    cells_b = [c.cell_contents for c in b.__closure__ or ()]         # type: ignore[attr-defined]
    assert len(cells_a) == len(cells_b), what


def test_classes_made_through_the_cache_have_dataclasses_own_methods() -> None:
    plain = _make(None)
    cache = method_cache.MethodCache({})
    fresh = _make(cache)                  # every text compiled here: all misses
    assert cache.fresh and set(cache.fresh) == set(cache.used) == set(cache.codes)
    reread = method_cache.MethodCache(marshal.loads(marshal.dumps(cache.codes)))
    hit = _make(reread)                   # every text from the "entry": all hits
    assert not reread.fresh and reread.used == set(cache.fresh)
    for made in (fresh, hit):
        assert set(made) == set(plain) == {"Frozen", "Ordered", "Post", "Slotted", "NoDoc"}
        for name, cls in made.items():
            methods, expected = _methods(cls), _methods(plain[name])
            assert set(methods) == set(expected), name
            for method in expected:
                _same_function(methods[method], expected[method], f"{name}.{method}")
            assert cls.__doc__ == plain[name].__doc__
    # And they behave as dataclasses' do.
    frozen = hit["Frozen"](1)
    assert frozen == hit["Frozen"](1, "x", ()) and repr(frozen) == "Frozen(a=1, b='x', c=())"
    with pytest.raises(dataclasses.FrozenInstanceError):
        frozen.a = 2                      # type: ignore[misc]
    assert hit["Ordered"](1) < hit["Ordered"](2) and hash(hit["Ordered"](1, [1])) == hash(hit["Ordered"](1))
    post = hit["Post"](3, 4, k=1)
    assert (post.a, post.k) == (12, 1)
    with pytest.raises(TypeError):
        hit["Slotted"](1)                 # keyword only
    assert hit["Slotted"](a=1).__slots__ == ("a", "b")
    assert hit["NoDoc"].__doc__ == "NoDoc(a: 'int')"


def test_another_text_never_gets_an_entrys_code() -> None:
    """The key is the whole text's digest: a text differing in one character is compiled."""
    cache = method_cache.MethodCache({})
    namespace: dict[str, object] = {}
    cache.run("def f():\n return 1\n", namespace, namespace)
    cache.run("def f():\n return 2\n", namespace, namespace)
    assert namespace["f"]() == 2 and len(cache.fresh) == 2


def _planted(package: str) -> tuple[str, str]:
    """An entry whose code for a dataclass text is someone else's: the class's __init__ sets
    a marker. The entry is well formed; only who wrote it differs between the tests."""
    cache = method_cache.MethodCache({})
    _make(cache)
    text_digest = next(iter(cache.codes))
    evil = compile("def __create_fn__(*a, **k):\n def __init__(self, *a, **k):\n"
                   "  object.__setattr__(self, 'planted', True)\n return __init__\n",
                   "<string>", "exec", 0, True)
    codes = {d: (evil if d == text_digest else c) for d, c in cache.codes.items()}
    forged = method_cache.MethodCache(codes)
    forged.used = set(codes)
    forged.fresh = dict(codes)
    assert method_cache._write(forged)                   # noqa: SLF001
    return os.path.join(filter_cache.cache_dir(method_cache.DIRNAME), method_cache.key()), text_digest


def test_an_entry_of_the_packages_owner_is_used(package) -> None:
    """The positive half of the next test: a well-formed entry of the package's owner is read
    (its planted code included: whoever can write there can write the modules themselves)."""
    entry, digest = _planted(package)
    codes = method_cache._read()                          # noqa: SLF001
    assert digest in codes and "planted" in _constants(codes[digest])
    made = _make(method_cache.MethodCache(codes))
    assert any(hasattr(cls(**_args(cls)), "planted") for cls in made.values())


def _constants(code: object) -> list[object]:
    """Every constant of a code object and of the code objects it holds."""
    found: list[object] = []
    for const in code.co_consts:                          # type: ignore[attr-defined]
        found += _constants(const) if hasattr(const, "co_consts") else [const]
    return found


@pytest.mark.parametrize("how", ["group-writable", "world-writable", "another owner", "symlink",
                                 "directory of another owner", "torn", "payload swapped", "not code"])
def test_an_entry_anyone_else_could_have_written_or_a_broken_one_is_a_miss(package, how, tmp_path) -> None:
    entry, _digest = _planted(package)
    if how == "group-writable":
        os.chmod(entry, 0o620)
    elif how == "world-writable":
        os.chmod(entry, 0o602)
    elif how in ("another owner", "directory of another owner"):
        if os.geteuid() != 0:
            pytest.skip("needs root to give a file to another user")
        os.chown(entry if how == "another owner" else os.path.dirname(entry), NOBODY, NOBODY)
    elif how == "symlink":
        elsewhere = tmp_path / "elsewhere"
        os.replace(entry, elsewhere)
        os.symlink(elsewhere, entry)
    elif how == "torn":
        data = Path(entry).read_bytes()
        Path(entry).write_bytes(data[:len(data) // 2])
    elif how == "payload swapped":
        data = Path(entry).read_bytes()
        header, _, _payload = data[len(method_cache.MAGIC):].partition(b"\n")
        Path(entry).write_bytes(method_cache.MAGIC + header + b"\n" + marshal.dumps({"a": compile("", "", "exec")}))
    elif how == "not code":
        payload = marshal.dumps({"a": b"not code"})
        meta = {"key": method_cache.key(), "sha256": filter_cache._sha256(payload)}   # noqa: SLF001
        Path(entry).write_bytes(method_cache.MAGIC + json.dumps(meta).encode() + b"\n" + payload)
    assert method_cache._read() == {}                     # noqa: SLF001
    # A miss compiles: the classes are dataclasses' own, no marker.
    cache = method_cache.MethodCache(method_cache._read())   # noqa: SLF001
    made = _make(cache)
    assert not any(hasattr(cls(**_args(cls)), "planted") for cls in made.values())


def _args(cls: type) -> dict[str, object]:
    return {f.name: 1 for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING}


def test_activate_and_finish_leave_dataclasses_as_they_were(package) -> None:
    assert "exec" not in vars(dataclasses)
    cache = method_cache.activate()
    assert cache is not None and dataclasses.exec == cache.run          # type: ignore[attr-defined]
    assert method_cache.activate() is None                              # one stand-in at a time
    method_cache.finish()
    assert "exec" not in vars(dataclasses)
    method_cache.finish()                                                # nothing active: nothing


def test_dataclasses_without_inspect_until_it_is_needed() -> None:
    """In a fresh interpreter: dataclasses imported through dataclass_import leaves inspect
    unimported, a class with a docstring needs none, one without imports it then and gets
    the docstring dataclasses gives; `import inspect` afterwards is the real module."""
    probe = """
import json, sys
from cleancoin.sandbox.dataclass_import import import_dataclasses
dc = import_dataclasses()
seen = ["inspect" in sys.modules]
@dc.dataclass
class A:
    "documented"
    x: int
seen.append("inspect" in sys.modules)
@dc.dataclass
class B:
    x: int
seen.append("inspect" in sys.modules)
import inspect
print(json.dumps([seen, B.__doc__, type(inspect).__name__, inspect.signature(A).parameters["x"].name,
                  hasattr(inspect, "getmembers")]))
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                            check=True, cwd=tempfile.gettempdir())
    assert json.loads(result.stdout) == [[False, False, True], "B(x: int)", "module", "x", True]


def test_the_console_script_compiles_nothing_once_its_entry_is_written(tmp_path: Path) -> None:
    """The real path, in fresh interpreters, the cache in a package directory of its own:
    the first run compiles every method and writes the entry, the second compiles none and
    uses as many, and both import the same classes."""
    root = tmp_path / "package"
    root.mkdir(mode=0o755)
    probe = f"""
import json, sys
from cleancoin.sandbox import filter_cache, method_cache
filter_cache.package_dir = lambda: {str(root)!r}
cache = method_cache.activate()
from cleancoin.sandbox import launcher, model, policy_cache
method_cache.finish()
print(json.dumps([len(cache.fresh), len(cache.used)]))
"""
    runs = [json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                      timeout=60, check=True, cwd=tempfile.gettempdir()).stdout)
            for _ in range(2)]
    (fresh1, used1), (fresh2, used2) = runs
    assert fresh1 == used1 > 50           # the launch path's classes: about 100 methods
    assert (fresh2, used2) == (0, used1)
