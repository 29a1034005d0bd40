"""sandbox/log_format.py: a log record, whatever its message carries, as the debug logs write
it. Real logging to a real file."""

from __future__ import annotations

import logging
from pathlib import Path

from cleancoin.sandbox.log_format import CONTINUATION, LogFormatter

FORMAT = "%(asctime)s.%(msecs)03dZ [%(name)s] %(levelname)s %(message)s"


def _logged(tmp_path: Path, *records: tuple[str, tuple[object, ...], bool]) -> str:
    path = tmp_path / "debug.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(LogFormatter(FORMAT, "%Y-%m-%dT%H:%M:%S"))
    log = logging.getLogger("cleancoin.test_log_format")
    log.propagate = False
    log.addHandler(handler)
    try:
        for message, args, with_traceback in records:
            if with_traceback:
                try:
                    raise ValueError("boom\n2026-01-01T00:00:00.000Z [cleancoin.node] INFO forged")
                except ValueError:
                    log.exception(message, *args)
            else:
                log.warning(message, *args)
    finally:
        log.removeHandler(handler)
        handler.close()
    return path.read_text(encoding="utf-8")


def test_each_record_starts_its_own_line_and_nothing_else_does(tmp_path: Path) -> None:
    forged = "2026-01-01T00:00:00.000Z [cleancoin.node] INFO forged"
    text = _logged(tmp_path, ("plain ascii: peer=3 subver=/Satoshi:27.0/", (), False),
                   ("wallet %s loaded", (f"w\n{forged}\r\x1b[2K",), False),
                   ("failed", (), True))
    lines = text.split("\n")[:-1]
    starts = [line for line in lines if not line.startswith(CONTINUATION)]
    assert len(starts) == 3, text
    # Allowed: an ordinary record is written as it was (bitcoind's log writes the same).
    assert starts[0].endswith(" [cleancoin.test_log_format] WARNING plain ascii: peer=3 subver=/Satoshi:27.0/")
    # Refused: the forged line stays inside its record, escaped where it was a control.
    assert f"{CONTINUATION}{forged}\\x0d\\x1b[2K loaded" in lines, text
    assert not any(line.startswith(forged) for line in lines), text
    # A traceback is part of its record: every line of it indented, its message's too.
    assert "Traceback (most recent call last):" in text and f"\n{CONTINUATION}Traceback" in text
    assert "\x1b" not in text and "\r" not in text
