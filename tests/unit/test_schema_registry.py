"""The metrics payload schema cannot drift from the metric families registry (metrics.families), and every payload
kind's schema carries the `schema` version.

The registry says which keys a payload can hold (the envelope, then each selected family's keys); payload.v1.json
must describe exactly those keys (`flowgauge export` types its columns from it), and require what every payload
carries: the envelope, and of the fields only core ones (core is always published; other families only when
`publish.families` selects them).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import flowgauge
from flowgauge.engine import payload_template
from flowgauge.metrics.families import ALL, CORE, FAMILIES, resolve

PAYLOAD_KINDS = ("payload", "status", "trade", "agg", "bars")


def _schema(name: str) -> dict[str, Any]:
    return json.loads(flowgauge.schema_path(name).read_text())


PAYLOAD_SCHEMA = _schema("payload")
ENVELOPE = [key for key in payload_template(resolve([])) if key not in FAMILIES[CORE]]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_field_of_every_family_is_in_the_payload_schema(family: str) -> None:
    missing = [key for key in FAMILIES[family] if key not in PAYLOAD_SCHEMA["properties"]]
    assert not missing, f"family {family}: fields not in payload.v1.json: {missing}"


def test_the_payload_schema_describes_nothing_else() -> None:
    published = payload_template(resolve([ALL]))
    assert [key for key in PAYLOAD_SCHEMA["properties"] if key not in published] == []


def test_the_envelope_is_required_and_no_field_of_an_optional_family() -> None:
    """Core fields may be required (each payload carries them); a field added to core after v1's first release
    (`coverage`) is not, so payloads of an older daemon still validate."""
    required = set(PAYLOAD_SCHEMA["required"])
    assert set(ENVELOPE) <= required
    assert required <= {*ENVELOPE, *FAMILIES[CORE]}, required - {*ENVELOPE, *FAMILIES[CORE]}


@pytest.mark.parametrize("kind", PAYLOAD_KINDS)
def test_every_payload_kind_has_a_schema_carrying_the_version(kind: str) -> None:
    schema = _schema(kind)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["schema"] == {"const": "flowgauge.v1"}
    assert "schema" in schema["required"]
    # Every required field is described.
    assert set(schema["required"]) <= set(schema["properties"])
