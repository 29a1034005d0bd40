"""Line numbers for keys of a TOML document.

`tomllib` (the standard library parser) returns plain dicts without positions, and no
well-kept TOML library exposes them either (tomlkit keeps trivia, not line numbers), so this
small scanner maps dotted key paths such as `seccomp.allow[3]` or `seccomp.rules[1].args` to
the line that wrote them. It only has to be right for documents `tomllib` already accepted.
"""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*=")


def _split_key(raw: str) -> list[str]:
    parts = re.findall(r"\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_-]+)", raw)
    return [a or b or c for a, b, c in parts]


def _scan_value(text: str, start: int) -> list[tuple[int, int]]:
    """Offsets of the top-level elements of an array value starting at `start`, with depth.

    Returns (offset, element index) pairs for elements of the outermost array; strings and
    comments are skipped so that brackets inside them do not count.
    """
    elements: list[tuple[int, int]] = []
    depth = 0
    index = 0
    expecting = False
    i = start
    while i < len(text):
        ch = text[i]
        if ch in "\"'":
            triple = text[i:i + 3] == ch * 3
            end = text.find(ch * 3 if triple else ch, i + (3 if triple else 1))
            while not triple and end > 0 and ch == '"' and text[end - 1] == "\\":
                end = text.find(ch, end + 1)
            if expecting and depth == 1:
                elements.append((i, index))
                expecting = False
            i = (end + (3 if triple else 1)) if end > 0 else len(text)
            continue
        if ch == "#":
            nl = text.find("\n", i)
            i = nl if nl > 0 else len(text)
            continue
        if ch in "[{":
            if expecting and depth == 1:
                elements.append((i, index))
                expecting = False
            depth += 1
            if depth == 1 and ch == "[":
                expecting = True
            i += 1
            continue
        if ch in "]}":
            depth -= 1
            if depth == 0:
                break
            i += 1
            continue
        if ch == "," and depth == 1:
            index += 1
            expecting = True
        elif expecting and depth == 1 and not ch.isspace():
            elements.append((i, index))
            expecting = False
        elif depth == 0 and ch == "\n":
            break
        i += 1
    return elements


def key_lines(text: str) -> dict[str, int]:
    """Map every dotted key path of a TOML text to its 1-based line number.

    Arrays of tables are numbered (`seccomp.rules[0].syscall`), and so are array elements
    (`filesystem.read[2]`), which lets an error about one path in a list point at its line.
    """
    lines: dict[str, int] = {}
    offsets = [0]
    for line in text.splitlines(keepends=True):
        offsets.append(offsets[-1] + len(line))

    def line_of(offset: int) -> int:
        lo, hi = 0, len(offsets) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if offsets[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1

    prefix = ""
    aot_counts: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header and not _KEY.match(line):
            path = ".".join(_split_key(header.group(2)))
            if header.group(1) == "[[":
                aot_counts[path] = aot_counts.get(path, -1) + 1
                path = f"{path}[{aot_counts[path]}]"
            prefix = path
            lines.setdefault(prefix, number)
            continue
        key = _KEY.match(line)
        if not key:
            continue
        path = ".".join(filter(None, [prefix, ".".join(_split_key(key.group(1)))]))
        lines.setdefault(path, number)
        start = offsets[number - 1] + key.end()
        # Skip blanks by index: slicing the rest of the text for every key would make a file
        # of many short keys quadratic.
        while start < len(text) and text[start] in " \t":
            start += 1
        if text.startswith("[", start):
            for offset, index in _scan_value(text, start):
                lines.setdefault(f"{path}[{index}]", line_of(offset))
    return lines


def line_for(lines: dict[str, int], path: str) -> int:
    """The line of `path`, or of its nearest enclosing key; 0 when nothing matches."""
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return 0
