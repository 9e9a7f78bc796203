"""Who may use the server: the API key on /v1/..., probes and the page open, CORS only for named origins."""

from __future__ import annotations

import logging

import pytest

from fcnseg.serve import create_app

KEY = "k3y-Never-In-Logs"


@pytest.fixture(scope="module")
def good(helpers):
    return helpers.encode(helpers.make_image(0, (48, 40)))


@pytest.fixture(scope="module")
def locked(segmenter, helpers):
    with helpers.client(create_app(segmenter, config=helpers.config(api_key=KEY))) as c:
        yield c


@pytest.mark.parametrize(
    "auth", [None, "Bearer wrong", f"Bearer {KEY}x", f"bearer{KEY}", f"Basic {KEY}", KEY], ids=lambda a: str(a)[:12]
)
def test_model_endpoints_need_the_key(locked, good, auth, caplog):
    headers = {"content-type": "image/png", **({"authorization": auth} if auth else {})}
    with caplog.at_level(logging.WARNING, logger="fcnseg.serve"):
        answers = [locked.get("/v1/models", headers=headers), locked.post("/v1/segment", content=good, headers=headers)]
    for r in answers:
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert set(r.json()) == {"detail", "request_id"} and r.json()["request_id"] == r.headers["x-request-id"]
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 2
    assert not any(KEY in m for m in refusals)  # the log never holds what was sent
    assert all(answers[1].headers["x-request-id"] in m or answers[0].headers["x-request-id"] in m for m in refusals)


def test_the_key_lets_in(locked, good, helpers):
    bearer = {"authorization": f"Bearer {KEY}"}
    assert locked.get("/v1/models", headers=bearer).status_code == 200
    r = locked.post("/v1/segment", content=good, headers={"content-type": "image/png", **bearer})
    assert r.status_code == 200 and helpers.mask_of(r.json()).shape == (40, 48)


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/", "/static/app.js", "/docs", "/openapi.json"])
def test_probes_page_and_docs_stay_open(locked, path):
    assert locked.get(path).status_code == 200


def test_no_cors_by_default(segmenter, helpers):
    with helpers.client(create_app(segmenter, config=helpers.config())) as c:
        r = c.get("/v1/models", headers={"origin": "https://app.example"})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_cors_for_named_origins_only(segmenter, helpers):
    config = helpers.config(api_key=KEY, cors_origins=("https://app.example",))
    with helpers.client(create_app(segmenter, config=config)) as c:
        preflight = c.options("/v1/segment", headers={
            "origin": "https://app.example", "access-control-request-method": "POST",
            "access-control-request-headers": "authorization",
        })  # fmt: skip
        assert preflight.status_code == 200  # answered before the key check: preflights carry no credentials
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        bearer = {"authorization": f"Bearer {KEY}"}
        ok = c.get("/v1/models", headers={"origin": "https://app.example", **bearer})
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        other = c.get("/v1/models", headers={"origin": "https://evil.example", **bearer})
        assert "access-control-allow-origin" not in other.headers


def test_one_log_line_when_ready(segmenter, helpers, caplog):
    with (
        caplog.at_level(logging.INFO, logger="fcnseg.serve"),
        helpers.client(create_app(segmenter, config=helpers.config(max_batch=1))),
    ):
        pass
    ready = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ready:")]
    assert len(ready) == 1 and "answers one image in" in ready[0]


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR"])
def test_the_scheme_name_is_case_insensitive(locked, scheme):
    """RFC 7235 section 2.1: auth-scheme is case-insensitive; the key itself is not."""
    assert locked.get("/v1/models", headers={"authorization": f"{scheme} {KEY}"}).status_code == 200
    assert locked.get("/v1/models", headers={"authorization": f"{scheme} {KEY.lower()}"}).status_code == 401


def test_docs_declare_the_bearer_scheme(locked, segmenter, helpers):
    """/docs' Authorize button needs the scheme in the OpenAPI schema, on the routes that need the key."""
    schema = locked.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert list(schemes) == ["apiKey"] and schemes["apiKey"]["type"] == "http"
    assert schemes["apiKey"]["scheme"] == "bearer"
    for path, method in (("/v1/segment", "post"), ("/v1/models", "get")):
        assert schema["paths"][path][method]["security"] == [{"apiKey": []}]
    assert "security" not in schema["paths"]["/healthz"]["get"]
    with helpers.client(create_app(segmenter, config=helpers.config())) as open_server:  # no key: nothing declared
        assert "securitySchemes" not in open_server.get("/openapi.json").json().get("components", {})
