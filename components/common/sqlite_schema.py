"""A database file written by a confined process is input from that process: check its schema.

The confined node writes `chainstate.sqlite`, the confined wallet process its
`wallet.sqlite`. Both files are also opened by programs that run unconfined on the same
datadir: CleanCoind and CleanCoin-qt (the drop-in executables) and the offline tool
CleanCoin-wallet. A SQLite file carries code as well as data: views, triggers, virtual tables,
generated columns, CHECK and DEFAULT expressions and expression indexes are SQL that SQLite
runs in the process that opens the file, when it reads or writes the objects concerned. A
compromised component could therefore plant SQL (a trigger on a table the next program
writes, a view or an FTS virtual table in place of a table it reads) that runs in an
unconfined process: the attack surface of SQLite's whole engine, virtual-table modules and
all, reached from inside the sandbox. SQLite's own advice for files from an untrusted source
(https://www.sqlite.org/security.html) is what this module does:

- `PRAGMA trusted_schema=OFF`: SQL in the schema may call only functions SQLite marks
  innocuous, and may use no virtual table that is not;
- `PRAGMA cell_size_check=ON`: stricter checks of b-tree pages as they are read;
- and, stricter than its advice, every object in the file must be one this program creates,
  with the very SQL it creates it with (`Schema.check`), before any statement reads or writes
  a table. An object that is missing is fine (a new file, a table added by a later version);
  any other is refused with its kind and name. Whitespace is compared as SQLite reads it
  (space, tab, CR, LF, FF only: U+00A0 is whitespace to Python but an identifier character to
  SQLite, so 'PRIMARY<NBSP>KEY' is a column type, not a key), and no two objects may share a
  b-tree (`rootpage`: a table pointed at another's rows reads them as its own);
- and, for as long as the connection is open, an authorizer (`harden`) refuses every
  statement that would run SQL of a trigger or a view. The check runs once, at open; a writer
  still alive afterwards (SQLite's locks are advisory: a compromised process that wrote the
  file can write it again while another program has it open) can change the schema, and
  SQLite re-reads a changed schema before the next statement without asking us. Our programs
  create neither triggers nor views, so any that appear are refused at that statement
  ("not authorized"), before they run. What the authorizer cannot tell apart, a table
  replaced by an innocuous virtual table of the same name or a changed table definition
  after the check, still runs only innocuous functions (`trusted_schema=OFF`).

Data in ordinary tables is still the writer's to choose; the readers treat it as such (the
chain is checked against its headers and rules, the wallet's rows against its own keys).
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

# SQLite's whitespace (tokenize.c), not Python's \s, which also matches U+00A0, U+2000...
_SPACE = re.compile(r"[ \t\n\f\r]+")


class ForeignSchema(Exception):
    """The database holds a schema object this program does not create. `recognised`: some
    object of the file is one of ours by kind and name (a file of ours that was changed), as
    against a database of some other program altogether."""

    def __init__(self, message: str, recognised: bool) -> None:
        super().__init__(message)
        self.recognised = recognised


def _normal(sql: str | None) -> str | None:
    return None if sql is None else _SPACE.sub(" ", sql).strip()


@dataclass(frozen=True)
class Schema:
    """The schema objects a program creates: (type, name, table, SQL) as SQLite stores them."""

    objects: frozenset[tuple[str, str, str, str | None]]

    @classmethod
    def of(cls, statements: str) -> Schema:
        """The objects `statements` (CREATE TABLE/INDEX, `;`-separated) make in an empty
        database: SQLite's own text of each, so the comparison needs no SQL parser of ours."""
        conn = sqlite3.connect(":memory:")
        try:
            for statement in statements.split(";"):
                if statement.strip():
                    conn.execute(statement)
            return cls(frozenset(_objects(conn, "main")))
        finally:
            conn.close()

    def check(self, conn: sqlite3.Connection, path: str, database: str = "main") -> None:
        """Raise ForeignSchema, naming each object that is not one of ours, unless every
        object of `database` on `conn` is. Call it right after `harden`, before any other
        statement on that database."""
        names = {(kind, name) for kind, name, _, _ in self.objects}
        foreign = []
        recognised = False
        for kind, name, table, sql in sorted(_objects(conn, database), key=lambda o: (o[1], o[0])):
            recognised = recognised or (kind, name) in names
            if (kind, name, table, sql) in self.objects:
                continue
            shown = "virtual table" if (sql or "").upper().startswith("CREATE VIRTUAL") else kind
            foreign.append(f"{shown} {name!r}" + (" (changed)" if (kind, name) in names else ""))
        foreign.extend(_shared_b_trees(conn, database))
        if foreign:
            listed = ", ".join(foreign[:6]) + (f" and {len(foreign) - 6} more" if len(foreign) > 6 else "")
            raise ForeignSchema(
                f"{path}: holds SQL this program did not put there: {listed}. A database file "
                "carries SQL that SQLite runs in the program that opens it, and another program "
                "changed this one (a compromised component that wrote it?). Not opened: restore "
                "it from a backup, or move it away", recognised)


def harden(conn: sqlite3.Connection) -> None:
    """SQLite's settings for a file from a less trusted writer, and the authorizer that
    refuses SQL of a trigger or view for the connection's lifetime (module docstring)."""
    conn.execute("PRAGMA trusted_schema=OFF")
    conn.execute("PRAGMA cell_size_check=ON")
    conn.set_authorizer(_no_schema_code)


def _no_schema_code(action: int, arg1: str | None, arg2: str | None, database: str | None,
                    source: str | None) -> int:
    """sqlite3 authorizer: `source` names the trigger or view (or common table expression)
    whose code an action belongs to. Our statements have no trigger or view; a CTE of ours
    (storage's `WITH k AS (VALUES ...)`) shows as one SQLITE_SELECT with its name. So the bare
    SELECT step passes whatever its source, and every other action of a trigger or view, a
    read of a table, a write, a function call, is a planted object's and refused."""
    if source is None or action == sqlite3.SQLITE_SELECT:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def _shared_b_trees(conn: sqlite3.Connection, database: str) -> list[str]:
    """Objects whose rootpage is another object's (or page 1, sqlite_schema's own)."""
    rows = conn.execute(f'SELECT type, name, rootpage FROM "{database}".sqlite_schema '
                        "WHERE rootpage IS NOT NULL AND rootpage != 0").fetchall()
    owner: dict[object, str] = {1: "sqlite_schema"}
    shared = []
    for kind, name, root in sorted(rows, key=lambda r: (str(r[1]), str(r[0]))):
        if root in owner:
            shared.append(f"{kind} {name!r} (shares its b-tree with {owner[root]!r})")
        else:
            owner[root] = str(name)
    return shared


def _objects(conn: sqlite3.Connection, database: str) -> set[tuple[str, str, str, str | None]]:
    rows = conn.execute(f'SELECT type, name, tbl_name, sql FROM "{database}".sqlite_schema').fetchall()
    return {(str(kind), str(name), str(table), _normal(sql)) for kind, name, table, sql in rows}
