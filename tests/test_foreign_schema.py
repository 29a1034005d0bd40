"""SQL planted in a database file by a confined process must not run in the next program.

The confined wallet process writes wallet.sqlite and the confined node chainstate.sqlite;
CleanCoind, CleanCoin-qt and the offline CleanCoin-wallet tool open the same files
unconfined. Each attack here plants what a compromised component could (a trigger, a view in
place of a table, a virtual table, a changed table definition) with plain sqlite3, as its code
would, and opens the file as the next program does. Before components/common/sqlite_schema.py
the planted SQL ran: the trigger wrote its row from the opener's connection, the view's
rows were what the wallet read. Now the file is refused, naming the object, and nothing
planted runs. tests/functional/test_sandbox_attacks.py plants from inside the real confined
wallet process and opens with CleanCoind.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cleancoin.components.common.sqlite_schema import ForeignSchema, Schema
from cleancoin.components.node.storage import ChainStore, StorageError
from cleancoin.components.wallet.store import WalletError, WalletStore

TRIGGER = ("CREATE TRIGGER planted AFTER INSERT ON labels BEGIN "
           "INSERT OR REPLACE INTO meta VALUES ('planted', 'ran in the opener'); END")


def _wallet(tmp_path: Path) -> Path:
    WalletStore.create(tmp_path, "w", "regtest").close()
    return tmp_path / "wallets" / "w" / "wallet.sqlite"


def _plant(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


def _planted_ran(path: Path) -> bool:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT count(*) FROM meta WHERE key = 'planted'").fetchone()[0] > 0
    finally:
        conn.close()


def test_a_trigger_planted_in_a_wallet_never_runs_in_the_program_that_opens_it(tmp_path) -> None:
    path = _wallet(tmp_path)
    _plant(path, TRIGGER)
    with pytest.raises(WalletError, match="trigger 'planted'"):
        store = WalletStore.open(tmp_path, "w", "regtest")
        store.set_label("bcrt1qplanted", "x")      # what ran the trigger before the check
        store.close()
    assert not _planted_ran(path)
    # The wallet was not changed by the refusal: a clean file opens as before.
    _plant(path, "DROP TRIGGER planted")
    WalletStore.open(tmp_path, "w", "regtest").close()


@pytest.mark.parametrize("plant, named", [
    # A view in place of a table the wallet reads: its rows are the view's to choose.
    (("ALTER TABLE labels RENAME TO labels_real",
      "CREATE VIEW labels AS SELECT address, 'planted' AS label FROM labels_real"), "view 'labels'"),
    # A virtual table (FTS4: shadow tables the opener's SQLite parses) in place of one.
    (("DROP TABLE labels", "CREATE VIRTUAL TABLE labels USING fts4(address, label)"),
     "virtual table 'labels' (changed)"),
    # The same name, another definition: a generated column is SQL run at every read.
    (("DROP TABLE labels", "CREATE TABLE labels (address TEXT PRIMARY KEY, label TEXT NOT NULL, "
      "x AS (hex(label)))"), "table 'labels' (changed)"),
    # An expression index: SQL run at every write of its table.
    (("CREATE INDEX planted ON labels (hex(label))",), "index 'planted'"),
])
def test_other_sql_planted_in_a_wallet_is_refused_by_name(tmp_path, plant, named) -> None:
    path = _wallet(tmp_path)
    _plant(path, *plant)
    with pytest.raises(WalletError) as refused:
        WalletStore.open(tmp_path, "w", "regtest").close()
    assert named in str(refused.value) and "not opened" in str(refused.value).lower(), refused.value


def test_a_trigger_planted_in_the_chain_database_never_runs_in_the_next_node(tmp_path) -> None:
    path = tmp_path / "chainstate.sqlite"
    ChainStore(str(path)).close()
    _plant(path, "CREATE TRIGGER planted AFTER INSERT ON blocks BEGIN "
                 "INSERT OR REPLACE INTO meta VALUES ('planted', X'00'); END")
    with pytest.raises(StorageError, match="trigger 'planted'"):
        ChainStore(str(path)).close()
    assert not _planted_ran(path)


def test_a_database_of_ours_passes_and_the_check_names_only_what_differs() -> None:
    ours = Schema.of("CREATE TABLE t (a TEXT PRIMARY KEY, b);\nCREATE INDEX i ON t (b)")
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (a TEXT PRIMARY KEY,\n   b)")        # other whitespace: ours
    conn.execute("CREATE INDEX i ON t (b)")
    ours.check(conn, "mem")
    conn.execute("CREATE TABLE extra (x)")
    with pytest.raises(ForeignSchema, match="did not put there: table 'extra'. "):
        ours.check(conn, "mem")


def test_a_trigger_planted_while_the_wallet_is_open_never_runs_in_its_connection(tmp_path) -> None:
    """A writer still alive after the check (a compromised wallet process that dropped its
    advisory flock: SQLite's locks bind nobody who writes the file) plants a trigger while
    the unconfined program has the file open. SQLite re-reads a changed schema before the
    next statement, without our check. On the old code the trigger ran in the opener's
    connection; now every statement that would run SQL of the file's schema is refused."""
    path = _wallet(tmp_path)
    store = WalletStore.open(tmp_path, "w", "regtest")
    try:
        _plant(path, TRIGGER)
        with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
            store.set_label("bcrt1qplanted", "x")
        view = ("ALTER TABLE meta RENAME TO meta_real", "CREATE VIEW meta AS SELECT * FROM meta_real")
        _plant(path, "DROP TRIGGER planted", *view)
        with pytest.raises(sqlite3.DatabaseError, match="prohibited"):
            store.network()
    finally:
        store.close()
    assert not _planted_ran(path)


def test_sql_that_differs_only_in_what_python_calls_whitespace_is_refused(tmp_path) -> None:
    """U+00A0 is whitespace to Python's regular expressions, not to SQLite (an identifier
    character there): 'PRIMARY<NBSP>KEY' compared equal to 'PRIMARY KEY', while SQLite reads a
    column type and no key, so labels took duplicate addresses (old code)."""
    path = _wallet(tmp_path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA writable_schema=ON")
        conn.execute("UPDATE sqlite_schema SET sql = replace(sql, 'PRIMARY KEY', 'PRIMARY' || "
                     "char(160) || 'KEY') WHERE name = 'labels'")
        conn.execute("DELETE FROM sqlite_schema WHERE name = 'sqlite_autoindex_labels_1'")
    finally:
        conn.close()
    with pytest.raises(WalletError, match="table 'labels' \\(changed\\)"):
        WalletStore.open(tmp_path, "w", "regtest").close()


def test_two_objects_on_one_b_tree_are_refused(tmp_path) -> None:
    """rootpage is not SQL but says where an object's rows are: labels pointed at the
    secrets table's b-tree passed the check (old code) and the wallet read the seed row as
    a label."""
    path = _wallet(tmp_path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA writable_schema=ON")
        conn.execute("UPDATE sqlite_schema SET rootpage = (SELECT rootpage FROM sqlite_schema "
                     "WHERE name = 'secrets') WHERE name = 'labels'")
    finally:
        conn.close()
    with pytest.raises(WalletError, match="share"):
        WalletStore.open(tmp_path, "w", "regtest").close()
