"""Writing policy files: TOML text for the shapes a policy has, with comments.

The standard library reads TOML but does not write it, and a generated policy is read by
people: `learn` and `import` put comments beside what they found. So this writes exactly the
few shapes a policy uses (strings, integers, booleans, arrays, inline tables, tables and
arrays of tables), one element per line where a reviewer wants to see each.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from .printable import visible

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def key(name: str) -> str:
    """A key, quoted when it is not a bare key."""
    return name if _BARE_KEY.match(name) else json.dumps(name)


def literal(value: Any) -> str:
    """A value on one line: strings as TOML basic strings, tables inline."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # JSON string escapes are TOML basic-string escapes (\" \\ \n \uXXXX). JSON leaves DEL,
        # C1 and format characters raw (TOML refuses DEL; the others would reach a reviewer's
        # terminal): \uXXXX too. A lone surrogate (a name that is not UTF-8) has no TOML form.
        if _SURROGATE.search(value):
            raise ValueError(f"cannot write a string that is not UTF-8 as TOML: {visible(value)[:200]}")
        return visible(json.dumps(value, ensure_ascii=False))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key(k)} = {literal(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


@dataclass
class Item:
    """One `key = value` line (or a multi-line array), with comments above it."""

    name: str
    value: Any
    comments: list[str] = field(default_factory=list)
    # For arrays: one element per line, each with an optional trailing comment.
    element_comments: list[str] | None = None


@dataclass
class Section:
    """`[name]` (or `[[name]]` when `array`), with comments above it and its items."""

    name: str
    items: list[Item] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    array: bool = False

    def add(self, name: str, value: Any, *comments: str, element_comments: list[str] | None = None) -> None:
        self.items.append(Item(name, value, list(comments), element_comments))


def _comment_lines(comments: list[str]) -> list[str]:
    # TOML allows no control character in a comment either; shown as \uXXXX, never raw.
    return [("# " + visible(c)).rstrip() for text in comments for c in text.split("\n")]


def _item(item: Item) -> list[str]:
    lines = _comment_lines(item.comments)
    value = item.value
    if isinstance(value, (list, tuple)) and item.element_comments is not None:
        lines.append(f"{key(item.name)} = [")
        for element, note in zip(value, item.element_comments):
            lines.append(f"    {literal(element)}," + (f"   # {visible(note)}" if note else ""))
        lines.append("]")
    elif isinstance(value, (list, tuple)) and len(value) > 4:
        lines.append(f"{key(item.name)} = [")
        lines.extend(f"    {literal(element)}," for element in value)
        lines.append("]")
    else:
        lines.append(f"{key(item.name)} = {literal(value)}")
    return lines


def document(top: list[Item], sections: list[Section], header: list[str] = ()) -> str:  # type: ignore[assignment]
    """The whole file: header comments, top-level keys (`extends`), then the sections."""
    lines = _comment_lines(list(header))
    for item in top:
        lines.extend(_item(item))
    for section in sections:
        if not section.items and not section.array:
            continue
        lines.append("")
        lines.extend(_comment_lines(section.comments))
        lines.append(f"[[{section.name}]]" if section.array else f"[{section.name}]")
        for item in section.items:
            lines.extend(_item(item))
    return "\n".join(lines).lstrip("\n") + "\n"
