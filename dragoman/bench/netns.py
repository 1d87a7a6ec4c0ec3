"""Several "hosts" on one machine: network namespaces on a private bridge.

A caller creates the namespaces, a bridge in the root namespace (where its own callers run)
and one veth per host, and removes all of them afterwards (``HostNet.down`` kills what runs
in them). Traffic only ever goes to these namespaces' own addresses. Needs root. Used by the
fleet tests, ``scripts/fleet-demo.py`` and ``dragoman bench soak --fleet``.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

SUBNET = "10.231.{}.{}"


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@dataclass
class Host:
    ns: str
    ip: str

    def popen(self, argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
        out = log.open("w")
        return subprocess.Popen(
            ["ip", "netns", "exec", self.ns, *argv],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: kill -9 takes the whole "host"
        )


@dataclass
class HostNet:
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    net: int = field(default_factory=lambda: 100 + secrets.randbelow(100))
    hosts: list[Host] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"dgm{self.tag}br"

    @property
    def gateway(self) -> str:
        return SUBNET.format(self.net, 1)

    def up(self) -> None:
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")

    def add_host(self, name: str) -> Host:
        ns = f"dgm{self.tag}{name}"
        ip = SUBNET.format(self.net, 10 + len(self.hosts))
        veth = f"dgm{self.tag}v{len(self.hosts)}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", veth, "master", self.bridge, "up")
        sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        host = Host(ns, ip)
        self.hosts.append(host)
        return host

    def down(self) -> None:
        for host in self.hosts:
            subprocess.run(["ip", "netns", "pids", host.ns], capture_output=True)
            pids = subprocess.run(
                ["ip", "netns", "pids", host.ns], capture_output=True, text=True
            ).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "del", host.ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


def redis_argv(ip: str, port: int = 6379) -> list[str]:
    """A throwaway Redis on a namespace host: no persistence; protected mode off because
    only the test's own namespaces can reach that address."""
    return [
        "redis-server",
        "--bind",
        ip,
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
    ]


def dragoman_exe() -> str:
    """The ``dragoman`` console script beside this interpreter."""
    return str(Path(sys.executable).with_name("dragoman"))
