"""Property-based fuzzing of the OpenAPI schema (schemathesis): no request, valid or not, gets a 500."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fcnseg.serve import create_app  # noqa: E402

EXAMPLES = {"POST /v1/segment": 80}  # others are plain GETs without parameters
DEFAULT_EXAMPLES = 5


def fuzz(op, url: str, helpers, statuses: dict[str, set[int]]) -> None:
    """Hypothesis-driven calls of one operation, schema-valid and schema-violating; every answer must be < 500."""
    from schemathesis import GenerationMode

    cases = st.one_of(op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE))

    @settings(
        max_examples=EXAMPLES.get(op.label, DEFAULT_EXAMPLES),
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases, real_image=st.booleans())
    def run(case, real_image):
        if real_image and case.media_type and case.media_type != "multipart/form-data":
            case.body = helpers.encode(helpers.make_image(0, (24, 16)))  # so the success path is fuzzed too
        response = case.call(base_url=url, timeout=60)
        statuses.setdefault(op.label, set()).add(response.status_code)
        assert response.status_code < 500, f"{response.status_code} {response.text[:200]}\n{case.as_curl_command()}"

    run()


@pytest.mark.slow
def test_no_server_errors(segmenter, helpers):
    app = create_app(segmenter, config=helpers.config(max_pixels=50_000, max_upload_bytes=200_000, max_batch=1))
    with helpers.live_server(app) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = [op.ok() for op in schema.get_all_operations()]
        assert {"POST /v1/segment", "GET /v1/models", "GET /healthz", "GET /readyz"} <= {op.label for op in operations}
        statuses: dict[str, set[int]] = {}
        for op in operations:
            fuzz(op, url, helpers, statuses)
    # the fuzzer reached both the success path and the rejection paths of the upload endpoint
    assert 200 in statuses["POST /v1/segment"], statuses
    assert statuses["POST /v1/segment"] & {400, 415, 422}, statuses
