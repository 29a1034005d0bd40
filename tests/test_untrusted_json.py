"""jsonfmt.loads_untrusted: what the node accepts as a wallet process's answer."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cleancoin.components.rpc import jsonfmt
from cleancoin.components.rpc.jsonfmt import UntrustedJsonError, loads_untrusted


def load(text: str, max_bytes: int = 1000, max_depth: int = 4):  # type: ignore[no-untyped-def]
    return loads_untrusted(text, max_bytes=max_bytes, max_depth=max_depth)


def test_one_value_with_exact_decimals_round_trips() -> None:
    text = '{"amount":1.50000000,"n":[1,2,{"x":null}],"s":"caf\u00e9 \\u001b","ok":true}'
    value = load(text)
    assert value["amount"] == Decimal("1.50000000")
    assert jsonfmt.dumps(value) == '{"amount":1.50000000,"n":[1,2,{"x":null}],"s":"caf\u00e9 \\u001b","ok":true}'


@pytest.mark.parametrize("text, reason", [
    ('1,"error":null,"id":1},{"result":"FORGED","id":2},{"result":0', "exactly one JSON value"),
    ('"a" "b"', "exactly one JSON value"),
    ("", "exactly one JSON value"),
    ("NaN", "exactly one JSON value"),
    ("[Infinity]", "exactly one JSON value"),
    ('"\\ud800"', "lone surrogate"),
    ('{"\\udfff": 1}', "lone surrogate"),
    ("[[[[[1]]]]]", "levels deep"),
    ("[" * 100_000 + "]" * 100_000, "levels deep"),
    ("9" * 5000, "exactly one JSON value"),
    ('"' + "x" * 2000 + '"', "more than 1000"),
])
def test_refused(text: str, reason: str) -> None:
    with pytest.raises(UntrustedJsonError) as info:
        load(text, max_bytes=1000 if len(text) < 3000 else 10**6)
    assert reason in str(info.value)
    assert "FORGED" not in str(info.value)


def test_depth_bound_is_exact() -> None:
    assert load("[[[[1]]]]") == [[[[1]]]]
    with pytest.raises(UntrustedJsonError):
        load("[[[[[1]]]]]")


# -- dumps: exact decimals without a regular expression per call (issue #16) ---------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_decimals = st.decimals(allow_nan=False, allow_infinity=False, places=8)
_leaves = st.none() | st.booleans() | st.integers() | st.text() | _decimals
_values = st.recursive(_leaves, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


@given(_values)
def test_dumps_writes_every_decimal_exactly_and_nothing_else(value) -> None:  # type: ignore[no-untyped-def]
    text = jsonfmt.dumps(value)
    again = jsonfmt.loads_untrusted(text, max_bytes=10**6, max_depth=64)
    assert again == value
    assert jsonfmt.dumps(again) == text
    indented = jsonfmt.dumps(value, indent=2)
    assert jsonfmt.loads_decimal(indented) == value


def test_strings_that_imitate_placeholders_stay_strings() -> None:
    forged = ["\x00", "\x000123456789abcdef:0\x00", '"\\u0000', "\\u0000\"", "\x00" * 3 + ":1\x00"]
    value = {"s": forged, "amount": Decimal("1.50000000"), "more": [Decimal("2"), "\x00x:1\x00"]}
    text = jsonfmt.dumps(value)
    assert jsonfmt.loads_untrusted(text, max_bytes=10**6, max_depth=8) == value
    assert '"amount":1.50000000' in text and "[2," in text


# -- one encoder and decoder per process, not per call (issue #16) --------------------------

def _python_calls(fn) -> list[str]:  # type: ignore[no-untyped-def]
    """The qualified names of the Python functions `fn()` calls (sys.setprofile)."""
    import sys
    names: list[str] = []

    def profile(frame, event, arg):  # type: ignore[no-untyped-def]
        if event == "call":
            names.append(frame.f_code.co_qualname)
    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return names


def test_a_forwarded_calls_json_work_builds_no_encoder_or_decoder() -> None:
    """What a forwarded wallet call does with JSON (the wallet parses "[]" and writes its
    result; the node checks the result and writes the reply) reuses one encoder and decoder:
    `json.dumps`/`json.loads` given options built a JSONEncoder/JSONDecoder every time, a
    third of a reply's cost."""
    result = '{"walletname":"w","balance":50.00000000,"immature_balance":0.00000000,"txcount":101}'

    def forwarded_call() -> None:
        assert jsonfmt.loads("[]") == []
        text = jsonfmt.dumps(jsonfmt.loads_decimal(result))
        value = jsonfmt.loads_untrusted(text, max_bytes=1000, max_depth=4)
        assert jsonfmt.dumps({"result": value, "id": 1}) == '{"result":' + result + ',"id":1}'

    forwarded_call()                       # the first call of a process makes them
    called = _python_calls(forwarded_call)
    assert not [n for n in called if n.endswith("__init__")], called
    assert called.count("_writer.<locals>.default") == 4      # each amount, once per dumps


def test_a_forked_child_writes_decimals_with_a_secret_of_its_own() -> None:
    """The placeholder's secret is per process: a wallet process (a fork of the zygote) does
    not share it with its parent or its siblings."""
    import os
    parent = jsonfmt._writer(None).marker        # noqa: SLF001 - the secret is what is tested
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, jsonfmt._writer(None).marker.encode())  # noqa: SLF001
            ok = jsonfmt.dumps([Decimal("0.00000001"), "\x00"]) == '[0.00000001,"\\u0000"]'
            os._exit(0 if ok else 1)
        finally:
            os._exit(2)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        child = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child.startswith('"\\u0000') and len(child) == len(parent) and child != parent
    assert jsonfmt._writer(None).marker == parent        # noqa: SLF001 - the parent's is kept
