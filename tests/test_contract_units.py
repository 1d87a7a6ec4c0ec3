"""The api ↔ worker contract: one error table read both ways, and request bodies read by a
size-limited dependency with the api's error codes."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Annotated

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, ValidationError

from dragoman.contract.calls import CallRequest
from dragoman.contract.errors import (
    AgentFailed,
    CallRejected,
    GlossaryError,
    InterpretationError,
    LanguageError,
    NoAgentAvailable,
    ProviderRejected,
    ProviderUnavailable,
    RegistryUnavailable,
    UnknownCall,
    WrongCallToken,
    from_http,
    to_http,
)
from dragoman.http.body import json_body
from dragoman.http.errors import install_error_handlers


@pytest.mark.parametrize(
    "error",
    [
        UnknownCall("c1"),
        WrongCallToken("c1"),
        CallRejected("bad_sdp", "Malformed SDP offer: no Opus audio offered"),
        NoAgentAvailable("All interpreters are busy.", 7),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_worker_error_reads_back_as_itself(error: Exception) -> None:
    answer = to_http(error)
    back = from_http(
        answer.status, answer.code, answer.message, answer.headers.get("Retry-After"), "c1"
    )
    assert type(back) is type(error) and str(back) == str(error)
    if isinstance(error, NoAgentAvailable):
        assert isinstance(back, NoAgentAvailable) and back.retry_after_s == 7


def test_failures_inside_the_fleet_answer_a_fixed_sentence_and_read_back_as_failed() -> None:
    for error, code in (
        (AgentFailed("agent 12 did not answer: timeout"), "agent_failed"),
        (RegistryUnavailable("redis://10.0.0.5 timed out"), "registry_unavailable"),
    ):
        answer = to_http(error)
        assert (answer.status, answer.code, answer.headers) == (503, code, {"Retry-After": "1"})
        assert str(error) not in answer.message  # the detail goes to the log only
        assert isinstance(from_http(503, code, answer.message, "1", "c1"), AgentFailed)
    assert isinstance(from_http(502, "", "Bad Gateway", None, "c1"), AgentFailed)
    with pytest.raises(TypeError):
        to_http(ValueError("not ours"))


def test_refusals_keep_their_codes_and_a_provider_not_configured_is_503() -> None:
    for kind in (LanguageError, ProviderRejected, GlossaryError, InterpretationError):
        assert to_http(kind("some_code", "why")).status == 400
        assert issubclass(kind, CallRejected)
    answer = to_http(ProviderUnavailable("provider_unavailable", "set DRAGOMAN_OPENAI_API_KEY"))
    assert (answer.status, answer.code) == (503, "provider_unavailable")
    # A worker's refusal of an interpretation reads back as a refusal with its code.
    answer = to_http(InterpretationError("unsupported_interpretation", "only simultaneously"))
    back = from_http(answer.status, answer.code, answer.message, None, "c1")
    assert isinstance(back, CallRejected) and back.code == "unsupported_interpretation"


def test_a_call_request_carries_its_interpretation() -> None:
    base = {"call_id": "c", "sdp": "v=0", "source": "ja", "target": "en"}
    assert CallRequest(**base).interpretation == "simultaneous"  # an older api's hand-off
    req = CallRequest(**base, interpretation="consecutive")
    assert CallRequest.model_validate_json(req.model_dump_json()).interpretation == "consecutive"
    with pytest.raises(ValidationError):
        CallRequest(**base, interpretation="whispered")


class _Body(BaseModel):
    name: str
    count: int = 1


def _app(limit: int) -> TestClient:
    app = FastAPI()
    app.state.settings = SimpleNamespace(max_body_bytes=limit)
    install_error_handlers(app)

    @app.post("/x")
    async def x(body: Annotated[_Body, Depends(json_body(_Body))]) -> dict[str, object]:
        return body.model_dump()

    return TestClient(app)


def test_bodies_are_limited_before_they_are_read_and_refused_in_our_format() -> None:
    client = _app(limit=100)
    assert client.post("/x", json={"name": "a", "extra": 1}).json() == {"name": "a", "count": 1}

    def error(r) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
        return r.status_code, r.json()["error"]["code"], r.json()["error"]["message"]

    assert error(client.post("/x", json={"name": "a" * 200}))[:2] == (413, "body_too_large")

    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"name": "'
        for _ in range(50):
            yield b"aaaaaaaaaa"
        yield b'"}'

    chunked = client.post("/x", content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in chunked.request.headers
    assert error(chunked)[:2] == (413, "body_too_large")
    assert error(client.post("/x", content=b"{nope"))[:2] == (400, "bad_json")
    assert error(client.post("/x", json={"count": 2})) == (
        400,
        "bad_request",
        "name: Field required",
    )
