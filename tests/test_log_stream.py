"""common/log_stream.py against the real kernel: /dev/full fails every write with ENOSPC, as a
full disk does. logging's own handler printed a traceback for each record; this one says the
failure once and goes on."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import IO

import pytest

from cleancoin.components.common.log_stream import LogStreamHandler


@contextlib.contextmanager
def _full_disk() -> Iterator[IO[str]]:
    stream = open("/dev/full", "w", encoding="utf-8")
    try:
        yield stream
    finally:
        with contextlib.suppress(OSError):       # what is still buffered fails too
            stream.close()


def _logger(handler: logging.Handler, name: str) -> logging.Logger:
    log = logging.getLogger(name)
    log.propagate = False
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    return log


def test_a_log_on_a_full_disk_is_said_once_without_a_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    with _full_disk() as full:
        log = _logger(LogStreamHandler(full, "/dev/full"), "test.log_stream.full")
        for i in range(5):
            log.info("line %d", i)
    err = capfd.readouterr().err
    assert err == ("Error: cannot write /dev/full (No space left on device); log lines are lost "
                   "until it can be written again\n"), err


def test_the_plain_handler_it_replaces_printed_a_traceback_per_line(capfd: pytest.CaptureFixture[str]) -> None:
    """What the node's debug.log did before (the reason for the class): checked here so that
    the test above cannot pass for a reason of its own."""
    with _full_disk() as full:
        log = _logger(logging.StreamHandler(full), "test.log_stream.plain")
        for i in range(3):
            log.info("line %d", i)
    assert capfd.readouterr().err.count("--- Logging error ---") == 3


def test_a_broken_record_is_still_reported(capfd: pytest.CaptureFixture[str]) -> None:
    """Not a write failure but a bug (arguments that do not fit the format): logging's report."""
    with open("/dev/null", "w", encoding="utf-8") as null:
        log = _logger(LogStreamHandler(null, "/dev/null"), "test.log_stream.bug")
        log.info("%d", "not a number")
    assert "--- Logging error ---" in capfd.readouterr().err
