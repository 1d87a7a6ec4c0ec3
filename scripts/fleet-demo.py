#!/usr/bin/env python3
"""Run the fleet on three namespace "hosts" on this machine, until Ctrl-C.

    sudo .venv/bin/python scripts/fleet-demo.py [--workers 3] [--slots 8]

Creates a bridge and network namespaces (api + Redis in one, a worker in each of the
others), starts real `redis-server`, `dragoman api` and `dragoman worker` processes in them,
and prints the page's URL (reachable from this machine). Ctrl-C drains every worker
(SIGTERM), then removes the namespaces. Needs root, like `ip netns`.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fleet_hosts import HostNet, dragoman_exe, redis_argv, wait_http  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--slots", type=int, default=8, help="calls per worker")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces): run with sudo")
    logs = Path(tempfile.mkdtemp(prefix="dragoman-fleet-"))
    env = {
        **os.environ,
        "DRAGOMAN_INTERNAL_TOKEN": os.environ.get("DRAGOMAN_INTERNAL_TOKEN", os.urandom(8).hex()),
        "DRAGOMAN_LOG_LEVEL": "WARNING",
        "DRAGOMAN_WHISPER_WORKERS": "1",
    }

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    net = HostNet()
    net.up()
    procs: list[subprocess.Popen] = []
    try:
        api = net.add_host("api")
        registry = f"redis://{api.ip}:6379/0"
        procs.append(
            api.popen(
                redis_argv(api.ip),
                env,
                logs / "redis.log",
            )
        )
        procs.append(
            api.popen(
                [dragoman_exe(), "api", "--host", api.ip, "--port", "8000", "--registry", registry],
                env,
                logs / "api.log",
            )
        )
        workers = []
        for i in range(1, args.workers + 1):
            host = net.add_host(f"w{i}")
            wenv = {
                **env,
                "DRAGOMAN_REGISTRY": registry,
                "DRAGOMAN_NODE_ID": f"w{i}",
                "DRAGOMAN_WORKER_HOST": host.ip,
                "DRAGOMAN_MAX_CALLS": str(args.slots),
            }
            workers.append(host.popen([dragoman_exe(), "worker"], wenv, logs / f"w{i}.log"))
        procs += workers
        url = f"http://{api.ip}:8000"
        print(f"starting {args.workers} workers (logs in {logs})…", flush=True)
        wait_http(
            f"http://{api.ip}:9000/healthz",  # the api's internal port (port + 1000)
            600,
            ok=lambda r: r.status_code == 200 and r.json()["nodes"] == args.workers,
        )
        print(f"fleet ready: open {url}  (Ctrl-C to drain and stop)", flush=True)
        try:
            while all(p.poll() is None for p in procs):
                time.sleep(1)
            print("a fleet process exited; stopping", flush=True)
        except KeyboardInterrupt:
            print("draining workers…", flush=True)
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                print(f"worker exited with {w.wait(120)}", flush=True)
            except subprocess.TimeoutExpired:
                w.kill()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        net.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
