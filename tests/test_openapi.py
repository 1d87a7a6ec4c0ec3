"""The API describes itself truthfully: schemathesis, a third-party API fuzzer, reads each
port's ``/openapi.json`` from a real ``dragoman serve`` and drives every operation in it
with generated requests (schema-valid and not), checking each answer against the document:
its status is documented, its body matches the documented schema, its content type is the
documented one, a wrong method gets 405 with ``Allow``, and nothing is a server error.

Every check runs but ``positive_data_acceptance`` (a schema-valid request must be
accepted): no schema can say what a valid SDP offer or a served language pair is, so a
generated ``POST /v1/calls`` is rightly refused with 400 ``bad_sdp`` or ``unsupported_pair``.
Calls it may post carry no real offer: each is refused before any agent is taken.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Server, start_server, stop_server, wait_until

# Per operation and phase; a few hundred requests in all, as the issue's own run made.
MAX_EXAMPLES = 15


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("openapi"), DRAGOMAN_MAX_CALLS="1")
    yield srv
    assert stop_server(srv) == 0, srv.log_tail()
    log = srv.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]


def schemathesis(base_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("schemathesis")
    return subprocess.run(
        [str(exe), "run", f"{base_url}/openapi.json"]
        + ["--checks", "all", "--exclude-checks", "positive_data_acceptance"]
        + ["--max-examples", str(MAX_EXAMPLES), "--seed", "23"]
        + ["--workers", "1", "--request-timeout", "10", "--no-color"],
        cwd=cwd,  # its example database and reports stay in the test's folder
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("port", ["public", "internal"])
def test_schemathesis_finds_nothing_wrong(fuzzed: Server, port: str, tmp_path: Path) -> None:
    url = fuzzed.url if port == "public" else fuzzed.internal_url
    run = schemathesis(url, tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-8000:]
    # It tested something: every operation of the document, with generated cases.
    generated = re.search(r"(\d+) generated", out)
    assert generated and int(generated.group(1)) > 0, out[-4000:]
    assert not re.search(r"\b[1-9]\d* (failures?|errors?)\b", out), out[-8000:]
    # Nothing it sent started a call that stays: the node is idle again, its pool full.
    wait_until(
        lambda: (h := fuzzed.health())["active_calls"] == 0 and h["idle_agents"] == 1,
        30,
        what="an idle node after fuzzing",
    )
