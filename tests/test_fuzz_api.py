"""Schema-driven fuzzing of the operators' API (Schemathesis): every operation of
/api/v1/openapi.json, called as a member of the URP with requests generated from the schema,
valid ones and ones that break it. No answer is a 5xx, every answer is one the published
schema describes (status code, content type, body), and the register is never half-written
(`tests.fuzzing.assert_whole`).

Schemathesis's own pytest plugin does not run on pytest 9 (it reads a removed attribute), so
the operations are drawn here through its Python API (`APIOperation.as_strategy`) and
Hypothesis. Bounded by FUZZ_EXAMPLES (examples per operation and mode; 50 unless set)."""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import checks
from schemathesis.generation import GenerationMode

from api.openapi import spec
from cases.config import Municipality
from tests.conftest import Staff
from tests.fuzzing import assert_whole, seed_cases

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))
OPERATIONS = [
    (path, method)
    for path, item in spec()["paths"].items()
    for method in item
    if method in ("get", "post", "put", "patch", "delete")
]
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_the_api_answers_every_request_as_its_schema_says(
    app: Flask, staff: Staff, muni: Municipality, path: str, method: str, mode: GenerationMode
) -> None:
    protocols = seed_cases(app, muni)
    token = staff.add("urp", "urp")
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    operation = schema[path][method.upper()]
    known = [p.replace("/", "-") for p in protocols]
    strategies = [operation.as_strategy(generation_mode=mode)]
    if "{protocol}" in path:  # real cases too, not only numbers that match none
        strategies += [
            operation.as_strategy(generation_mode=mode, path_parameters={"protocol": p})
            for p in known
        ]

    @given(case=st.one_of(strategies))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=not os.environ.get("FUZZ_RANDOM"),  # as in tests/test_fuzz_inputs.py
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)
        assert_whole(app)

    fuzz()
