"""The JSON Schema of the policy format, generated from the table in `policy_spec`.

Editors that understand TOML schemas (taplo, VS Code's Even Better TOML) use it to complete
keys and flag mistakes while a policy is written. It only describes the shape of a file:
the loader checks more (variables, syscall names, dangerous grants without a reason, `extends`),
so a file the schema accepts can still be refused by `load_policy`.

The shipped copy lives in `policies/policy.schema.json`; regenerate it after changing the
format with:

    python -m cleancoin.sandbox.policy_schema > policies/policy.schema.json

`tests/test_policy_schema.py` fails when the shipped copy and this module disagree.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from .policy_spec import SECTIONS, TOP_LEVEL, Key

SCHEMA_ID = "https://cleancoin.invalid/policy.schema.json"
DRAFT = "https://json-schema.org/draft/2020-12/schema"

SECTION_DOCS: Mapping[str, str] = {
    "policy": "Name and description of the component this policy is for.",
    "namespaces": "Linux namespaces the component runs in.",
    "filesystem": "What the component may read, write and execute (Landlock).",
    "network": "TCP ports (Landlock) and socket families (seccomp) the component may use.",
    "scopes": "IPC outside the sandbox that Landlock cuts off.",
    "process": "Capabilities, environment, file descriptors and resource limits.",
    "seccomp": "The syscall filter: allowed syscalls and @groups, denials and argument rules.",
    "compatibility": "What to do when the running kernel lacks part of a mechanism.",
}


def _key_schema(key: Key) -> dict[str, Any]:
    return {"description": key.doc, **key.type.schema()}


def _section_schema(name: str, keys: Mapping[str, Key]) -> dict[str, Any]:
    section: dict[str, Any] = {"type": "object", "additionalProperties": False,
                               "properties": {k: _key_schema(key) for k, key in keys.items()}}
    if name in SECTION_DOCS:
        section["description"] = SECTION_DOCS[name]
    return section


def _close_objects(node: Any) -> None:
    """Add `additionalProperties: false` to every object schema with fixed properties."""
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                for sub in value.values():   # property *names* are not schemas; their values are
                    _close_objects(sub)
            else:
                _close_objects(value)
    elif isinstance(node, list):
        for item in node:
            _close_objects(item)


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a policy file, as parsed by `tomllib`."""
    properties: dict[str, Any] = {name: _key_schema(key) for name, key in TOP_LEVEL.items()}
    properties.update({name: _section_schema(name, keys) for name, keys in SECTIONS.items()})
    schema: dict[str, Any] = {
        "$schema": DRAFT,
        "$id": SCHEMA_ID,
        "title": "CleanCoin sandbox policy",
        "description": "A policy file for a sandboxed CleanCoin component. Generated from "
                       "cleancoin.sandbox.policy_spec by `python -m "
                       "cleancoin.sandbox.policy_schema`; do not edit by hand.",
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }
    _close_objects(schema)
    return schema


def dumps() -> str:
    """The schema as it is shipped: indented, keys sorted, with a trailing newline."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    sys.stdout.write(dumps())


if __name__ == "__main__":
    main()
