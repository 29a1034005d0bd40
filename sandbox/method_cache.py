"""The methods dataclasses generates, kept compiled beside the code, as `__pycache__` keeps a
module's bytecode.

A dataclass writes the source of each method it generates (`__init__`, and for the plain ones
`__repr__`, `__eq__`, ...; a frozen one `__setattr__` and `__delattr__`) and compiles it with
`exec` when its class is created. On `CleanCoin-sandbox run`'s path that is 102 compilations of
about 50 KB of source, for 37 classes: about 20 ms of CPU of every run on the 2-core test
machine, the largest single part of the tool's own start (issue #16; docs/audit.md,
"Start-up time"). The source depends only on the fields and the interpreter, and the compiled
code only on the source and the interpreter; so the code object compiled for a source text can
be kept and executed again, exactly as `exec(text)` would have compiled it (same filename
`<string>`, no inherited future flags: dataclasses has none).

While the cache is active, dataclasses' `exec` (a name it looks up in its module's globals,
where the built-in stands otherwise) is `MethodCache.run`: the text is looked up by its
SHA-256 (a different text cannot get another's code; the digest, not the text, keeps an entry
of every command's classes within the cache's size bound), compiled and remembered on a miss, and executed with the globals and namespace dataclasses gives. Nothing
else changes: the classes are made by dataclasses' own code, field by field, and
tests/test_method_cache.py checks that a class made through the cache has the very methods
(same bytecode, same behaviour) as one made without. Only the console script activates it,
for the imports and the plan (`activate`, `finish`): it is gone before any program starts.

Trust is the filter cache's (filter_cache.py): the entries live in the installed package
(`sandbox/__method_cache__/`), read only if the directory and the file belong to the package
directory's owner, are writable by no one else and are not symlinks. Code from an entry runs
in the tool, as the installed modules' own bytecode in `__pycache__` does, with the same
owner and the same protection: whoever could write an entry could rewrite the modules
themselves. An entry also carries the SHA-256 of its payload (a torn or foreign file is a
miss), and its name is a key of the interpreter (version, build, bytecode magic): another
Python never reads it. Any problem is a miss, and a miss is never an error: the text is
compiled as dataclasses would have.
"""

from __future__ import annotations

import json
import marshal
import sys

from . import filter_cache

TYPE_CHECKING = False     # not typing's: `CleanCoin-sandbox run` imports this and never typing

if TYPE_CHECKING:
    from types import CodeType

DIRNAME = "__method_cache__"
FORMAT = "cleancoin-dataclass-methods/1"
MAGIC = b"CCDCM1\n"
#: The code object's type, without importing `types`.
_CODE_TYPE = type(compile("", "<string>", "exec", 0, True))


def key() -> str:
    """The entry's name: a SHA-256 of the format and of everything the compiled code depends
    on besides the source text (the interpreter, its build and its bytecode's magic number)."""
    try:
        import _frozen_importlib_external as bootstrap   # loaded at every start: no import cost
        magic = bootstrap.MAGIC_NUMBER.hex()
    except (ImportError, AttributeError):
        magic = ""
    text = json.dumps([FORMAT, sys.version, sys.hexversion, sys.implementation.cache_tag, magic],
                      separators=(",", ":"))
    return filter_cache._sha256(text.encode())   # noqa: SLF001 - the cache's own digest


class MethodCache:
    """Compiled method sources by the SHA-256 of their text: those read from the entry, those
    compiled here (`fresh`) and the digests of those this process used (`used`, so that an
    entry written by it keeps them)."""

    def __init__(self, codes: dict[str, CodeType]) -> None:
        self.codes = codes
        self.fresh: dict[str, CodeType] = {}
        self.used: set[str] = set()

    def run(self, source: object, globals: dict[str, object] | None = None,
            locals: dict[str, object] | None = None, /) -> None:
        """`exec(source, globals, locals)` as dataclasses calls it, with the code of a
        source text compiled once (module docstring)."""
        if globals is None:
            # Not dataclasses' way (it always gives its globals): exec in the caller's frame,
            # as the built-in would have.
            frame = sys._getframe(1)
            globals = frame.f_globals
            locals = frame.f_locals if locals is None else locals
        if type(source) is str:
            digest = filter_cache._sha256(source.encode())   # noqa: SLF001
            code = self.codes.get(digest)
            if code is None:
                code = compile(source, "<string>", "exec", 0, True)
                self.codes[digest] = code
                self.fresh[digest] = code
            self.used.add(digest)
            exec(code, globals, locals)
            return
        exec(source, globals, locals)    # type: ignore[arg-type] - bytes, code: as given


def _read() -> dict[str, CodeType]:
    """The entry's texts and code, checked (module docstring); empty on any problem."""
    name = key()
    data = filter_cache.read_entry(name, DIRNAME)
    if data is None or not data.startswith(MAGIC):
        return {}
    header, sep, payload = data[len(MAGIC):].partition(b"\n")
    if not sep:
        return {}
    try:
        meta = json.loads(header)
        if (not isinstance(meta, dict) or meta.get("key") != name
                or meta.get("sha256") != filter_cache._sha256(payload)):   # noqa: SLF001
            return {}
        codes = marshal.loads(payload)
    except Exception:  # noqa: BLE001 - whatever is wrong with an entry, it is a miss
        return {}
    if not isinstance(codes, dict) or not all(type(t) is str and type(c) is _CODE_TYPE
                                              for t, c in codes.items()):
        return {}
    return codes


def _write(cache: MethodCache) -> bool:
    """Write the entry: what it held and what was compiled here, or, should that not fit,
    only what this process used. False when not written (filter_cache.write_entry)."""
    for codes in (cache.codes, {t: cache.codes[t] for t in cache.used}):
        payload = marshal.dumps(codes)
        name = key()
        header = json.dumps({"key": name, "sha256": filter_cache._sha256(payload)},   # noqa: SLF001
                            separators=(",", ":"))
        data = MAGIC + header.encode() + b"\n" + payload
        if len(data) <= filter_cache.MAX_ENTRY_BYTES:
            return filter_cache.write_entry(name, data, DIRNAME)
    return False


def activate() -> MethodCache | None:
    """Have dataclasses compile through the cache from now on (until `finish`); None, and
    nothing changed, when something else already stands in for its `exec`. dataclasses is
    imported here, without `inspect` (dataclass_import.py) unless it is loaded already."""
    from .dataclass_import import import_dataclasses
    dataclasses = import_dataclasses()
    if "exec" in vars(dataclasses):
        return None
    cache = MethodCache(_read())
    dataclasses.exec = cache.run    # type: ignore[attr-defined]
    return cache


def finish() -> None:
    """Give dataclasses the built-in `exec` back and, if anything was compiled while the cache
    was active, write the entry. Nothing when it is not active."""
    dataclasses = sys.modules.get("dataclasses")
    shadow = vars(dataclasses).get("exec") if dataclasses is not None else None
    cache = getattr(shadow, "__self__", None)
    if not isinstance(cache, MethodCache):
        return
    del dataclasses.exec      # type: ignore[union-attr]
    if cache.fresh:
        _write(cache)
