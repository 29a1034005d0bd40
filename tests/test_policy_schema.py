"""Tests for the JSON Schema of the policy format (`cleancoin.sandbox.policy_schema`).

The shipped `policies/policy.schema.json` is what editors (taplo, VS Code's Even Better TOML)
use; it is generated from `policy_spec` and must never drift from it. The schema only
describes the shape of a file, so these tests check shape errors; everything the loader checks
beyond that (variables, syscall names, reasons, extends) is in test_policy_errors.py.
"""

from __future__ import annotations

import json
import tomllib
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from cleancoin.sandbox.policy_schema import SCHEMA_ID, dumps, json_schema
from cleancoin.sandbox.policy_spec import SECTIONS, TOP_LEVEL

REPO = Path(__file__).resolve().parent.parent
SOURCE_SCHEMA = REPO / "policies" / "policy.schema.json"
REGENERATE = "python -m cleancoin.sandbox.policy_schema > policies/policy.schema.json"
SHIPPED_POLICIES = sorted(str(p.relative_to(REPO / "policies").with_suffix(""))
                          for p in (REPO / "policies").rglob("*.toml"))


def _shipped(name: str) -> dict[str, Any]:
    with open(REPO / "policies" / f"{name}.toml", "rb") as handle:
        return tomllib.load(handle)


def test_the_shipped_policies_are_found() -> None:
    assert {"base/python", "strict"} <= set(SHIPPED_POLICIES)


@pytest.mark.parametrize("where", ["source tree", "installed package"])
def test_shipped_schema_matches_the_spec(where: str) -> None:
    if where == "source tree":
        text = SOURCE_SCHEMA.read_text(encoding="utf-8")
    else:
        text = files("cleancoin.policies").joinpath("policy.schema.json").read_text(encoding="utf-8")
    assert json.loads(text) == json_schema(), (
        f"policies/policy.schema.json ({where}) is out of date with policy_spec.py; "
        f"regenerate it with `{REGENERATE}` (and `make setup` to reinstall)")
    assert text == dumps(), f"policies/policy.schema.json is not formatted as generated; run `{REGENERATE}`"


def test_schema_shape_without_a_validator() -> None:
    """Checks that need no jsonschema package: the top level and every section and key."""
    schema = json.loads(SOURCE_SCHEMA.read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == SCHEMA_ID
    assert schema["title"] and schema["description"]
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {*SECTIONS, *TOP_LEVEL}
    for name, keys in SECTIONS.items():
        section = schema["properties"][name]
        assert section["type"] == "object" and section["additionalProperties"] is False, name
        assert set(section["properties"]) == set(keys), name
        for key, spec in keys.items():
            assert section["properties"][key]["description"] == spec.doc, f"{name}.{key}"
    for key, spec in TOP_LEVEL.items():
        assert schema["properties"][key]["description"] == spec.doc


def test_every_object_is_closed() -> None:
    """`additionalProperties: false` on every object with fixed keys, so typos are flagged."""
    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if "properties" in node:
                assert node.get("additionalProperties") is False, path
                for key, sub in node["properties"].items():
                    walk(sub, f"{path}.{key}")
            for key, sub in node.items():
                if key != "properties":
                    walk(sub, f"{path}/{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{path}[{i}]")

    walk(json_schema(), "$")


@pytest.mark.parametrize("name", SHIPPED_POLICIES)
def test_shipped_policies_use_only_keys_the_schema_knows(name: str) -> None:
    """A validator-free check that runs even without jsonschema: sections and keys exist."""
    schema = json_schema()
    for section, body in _shipped(name).items():
        assert section in schema["properties"], f"{name}: [{section}]"
        if isinstance(body, dict):
            assert set(body) <= set(schema["properties"][section]["properties"]), f"{name}: [{section}]"


# --- with a real validator ---------------------------------------------------------------

BROKEN: dict[str, str] = {
    "unknown section": '[filesytem]\nread = ["/usr"]\n',
    "unknown key": "[namespaces]\nnett = true\n",
    "string for bool": '[namespaces]\nuser = "yes"\n',
    "bool for int": "[compatibility]\nlandlock_min_abi = true\n",
    "abi out of range": "[compatibility]\nlandlock_min_abi = 0\n",
    "port out of range": "[network]\nbind_tcp = [70000]\n",
    "unknown socket family": '[network]\nsocket_families = ["inett"]\n',
    "unknown key in a grant": '[filesystem]\nread = [{ path = "/usr", why = "x" }]\n',
    "empty reason": '[process]\ncapabilities = [{ name = "net_raw", reason = "" }]\n',
    "unknown rlimit": "[process.rlimits]\ncorez = 0\n",
    "unknown default action": '[seccomp]\ndefault_action = "deny"\n',
    "allow as default action": '[seccomp]\ndefault_action = "allow"\n',
    "arg index 6": ('[[seccomp.rules]]\nsyscall = "ioctl"\naction = "errno:EPERM"\n'
                    'args = [{ index = 6, op = "eq", value = 1 }]\n'),
    "unknown op": ('[[seccomp.rules]]\nsyscall = "ioctl"\naction = "errno:EPERM"\n'
                   'args = [{ index = 1, op = "equals", value = 1 }]\n'),
    "unknown compatibility level": '[compatibility]\nlandlock = "medium"\n',
    "extends not an array": 'extends = "base/python.toml"\n',
}


def _validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(json_schema())
    return jsonschema.Draft202012Validator(json_schema())


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    _validator()


@pytest.mark.parametrize("name", SHIPPED_POLICIES)
def test_shipped_policies_validate(name: str) -> None:
    errors = [e.message for e in _validator().iter_errors(_shipped(name))]
    assert errors == [], f"{name}: {errors}"


@pytest.mark.parametrize("text", BROKEN.values(), ids=BROKEN.keys())
def test_broken_policies_do_not_validate(text: str) -> None:
    assert not _validator().is_valid(tomllib.loads(text))
