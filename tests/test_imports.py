"""The api and worker processes import no Pipecat: a call's pipeline lives in the agent
processes only (forked from a forkserver that preloads it), so the control plane and the
node's supervisor stay small and start fast."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# websockets is not on the list: the worker speaks it to Janus, the api to remote workers.
AGENT_ONLY = ("pipecat", "aiortc", "av", "loguru")


@pytest.mark.parametrize(
    "module",
    ["dragoman.api.app", "dragoman.worker.app", "dragoman.worker.service", "dragoman.cli"],
)
def test_control_plane_modules_import_no_pipeline(module: str) -> None:
    code = (
        "import json, sys\n"
        f"import {module}\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(AGENT_ONLY)!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [], out.stdout
