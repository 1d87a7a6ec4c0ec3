"""``serve --https``: the public port speaks HTTPS with a self-signed certificate made at
start (its SHA-256 fingerprint printed), valid for the host's addresses; the page is fetched
trusting exactly that certificate, after checking the fingerprint, and a call is placed over
it (the media is WebRTC's own DTLS-SRTP, unchanged). The internal port stays plain HTTP. A
certificate passed in the settings is served as given."""

from __future__ import annotations

import hashlib
import re
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Server, final_caption, start_server, stop_server

from dragoman.bench.caller import Caller, load_wav_mono
from dragoman.http.tls import self_signed

FINGERPRINT = re.compile(r"certificate SHA-256 fingerprint: ([0-9A-F:]{95})")


def https_url(server: Server) -> str:
    return server.url.replace("http://", "https://")


def served_certificate(server: Server) -> str:
    host, port = server.url.removeprefix("http://").split(":")
    return ssl.get_server_certificate((host, int(port)))


def colon_hex(digest: bytes) -> str:
    return ":".join(f"{b:02X}" for b in digest)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("https"), "--https", DRAGOMAN_MAX_CALLS="1")
    yield srv
    assert stop_server(srv) == 0, srv.log_tail()


async def test_the_page_and_a_call_over_https_with_the_printed_fingerprint(
    secure: Server, ja_speech: Path
) -> None:
    printed = FINGERPRINT.search(secure.log_path.read_text())
    assert printed, secure.log_tail()
    pem = served_certificate(secure)
    assert colon_hex(hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).digest()) == printed[1]
    # Trust exactly that certificate, host name (127.0.0.1, an IP SAN) checked.
    trust = ssl.create_default_context(cadata=pem)
    page = httpx.get(https_url(secure) + "/", verify=trust, timeout=10)
    assert page.status_code == 200 and "<title" in page.text
    with pytest.raises(httpx.RemoteProtocolError):  # no plain HTTP on the public port
        httpx.get(secure.url + "/", timeout=5)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(https_url(secure) + "/", timeout=5)  # the system's CAs do not know it
    assert secure.health()["status"]  # the internal port: plain HTTP still

    caller = Caller(https_url(secure), source="ja", target="en", ssl_context=trust)
    try:
        result = await caller.call()
        assert result.status == 201, result.error
        await caller.wait_open()  # wss:// control channel
        await caller.wait_for(lambda m: m.get("state") == "listening", 10)
        caller.mic.play(load_wav_mono(ja_speech))
        await caller.wait_for(final_caption("source"), 60)
        await caller.wait_for(final_caption("translation"), 60)
    finally:
        await caller.close()


@pytest.mark.e2e  # starts a serve in its body
def test_a_given_certificate_is_served(tmp_path: Path) -> None:
    made = self_signed(["127.0.0.1", "localhost"], tmp_path)
    srv = start_server(
        tmp_path,
        DRAGOMAN_TLS_CERT=str(made.cert),
        DRAGOMAN_TLS_KEY=str(made.key),
        DRAGOMAN_MAX_CALLS="1",
    )
    try:
        assert f"fingerprint: {made.fingerprint}" in srv.log_path.read_text()
        assert served_certificate(srv) == made.cert.read_text()
        trust = ssl.create_default_context(cafile=str(made.cert))
        assert httpx.get(https_url(srv) + "/", verify=trust, timeout=10).status_code == 200
    finally:
        assert stop_server(srv) == 0, srv.log_tail()
