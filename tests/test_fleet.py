"""The fleet on several hosts (network namespaces): an api + Redis host and three worker
hosts, real calls from aiortc callers in the root namespace. Drain, crash and Redis restart.

Needs root (it creates namespaces and a bridge); CI runs as root.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fleet_hosts import Host, HostNet, await_http, dragoman_exe, redis_argv, wait_http

from dragoman.api.tickets import mint
from dragoman.bench.caller import Caller
from dragoman.bench.embedded import NO_ABUSE_LIMITS, internal_url

TOKEN = "fleet-test-secret"
SLOTS = 12  # per worker: 30 calls over 3 workers leave room to place new ones while draining


@dataclass
class Fleet:
    net: HostNet
    api_host: Host
    logs: Path
    env: dict[str, str]
    redis: subprocess.Popen | None = None
    api: subprocess.Popen | None = None
    workers: dict[str, tuple[Host, subprocess.Popen]] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host.ip}:8000"

    @property
    def registry(self) -> str:
        return f"redis://{self.api_host.ip}:6379/0"

    def start_redis(self) -> None:
        self.redis = self.api_host.popen(
            redis_argv(self.api_host.ip),
            self.env,
            self.logs / "redis.log",
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.api_host.ns,
                    "redis-cli",
                    "-h",
                    self.api_host.ip,
                    "ping",
                ],
                capture_output=True,
                text=True,
            )
            if r.stdout.strip() == "PONG":
                return
            time.sleep(0.1)
        raise AssertionError("redis did not start")

    def start_worker(self, name: str, host: Host) -> None:
        env = {
            **self.env,
            "DRAGOMAN_REGISTRY": self.registry,
            "DRAGOMAN_NODE_ID": name,
            "DRAGOMAN_WORKER_HOST": host.ip,
            "DRAGOMAN_MAX_CALLS": str(SLOTS),
            # Muted callers never reach Whisper: every slot takes a local call here.
            "DRAGOMAN_LOCAL_CAPACITY": str(SLOTS),
        }
        proc = host.popen([dragoman_exe(), "worker"], env, self.logs / f"{name}.log")
        self.workers[name] = (host, proc)

    def processes(self) -> list[subprocess.Popen]:
        procs = [self.redis, self.api] + [proc for _, proc in self.workers.values()]
        return [p for p in procs if p is not None]

    def health(self) -> httpx.Response:
        return httpx.get(f"{internal_url(self.api_url)}/healthz", timeout=5)

    def worker_health(self, name: str) -> httpx.Response:
        host, _ = self.workers[name]
        return httpx.get(f"http://{host.ip}:8100/healthz", timeout=5)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    if os.geteuid() != 0:
        pytest.fail("the fleet tests need root (network namespaces); CI runs as root")
    logs = tmp_path_factory.mktemp("fleet")
    net = HostNet()
    net.up()
    env = {
        **os.environ,
        "DRAGOMAN_INTERNAL_TOKEN": TOKEN,
        **NO_ABUSE_LIMITS,  # one test address places every call; the limits' own test sets them
        "DRAGOMAN_LOG_LEVEL": "INFO",  # agents log why each call ended
        "DRAGOMAN_NODE_TTL_S": "3",
        "DRAGOMAN_WHISPER_WORKERS": "1",
        "DRAGOMAN_NO_MEDIA_TIMEOUT_S": "300",
        "DRAGOMAN_DRAIN_TIMEOUT_S": "120",
    }
    fleet: Fleet | None = None
    try:
        api_host = net.add_host("api")
        fleet = Fleet(net, api_host, logs, env)
        fleet.start_redis()
        fleet.api = api_host.popen(
            [
                dragoman_exe(),
                "api",
                "--host",
                api_host.ip,
                "--port",
                "8000",
                "--registry",
                fleet.registry,
            ],
            env,
            logs / "api.log",
        )
        for i in (1, 2, 3):
            fleet.start_worker(f"w{i}", net.add_host(f"w{i}"))
        deadline = time.monotonic() + 300
        while True:
            exited = [p.args for p in fleet.processes() if p.poll() is not None]
            assert not exited, f"fleet process exited during start: {exited}\n{fleet.log('api')}"
            try:
                wait_http(
                    f"{internal_url(fleet.api_url)}/healthz",
                    2,
                    ok=lambda r: (
                        r.status_code == 200
                        and r.json()["nodes"] == 3
                        and r.json()["free_slots"] == 3 * SLOTS
                    ),
                )
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
        yield fleet
    finally:
        for _host, proc in fleet.workers.values() if fleet else []:
            if proc.poll() is None:
                proc.kill()
        net.down()


async def place_calls(fleet: Fleet, n: int) -> list[Caller]:
    callers = [Caller(fleet.api_url, send_audio=False, keep_listening=False) for _ in range(n)]
    async with httpx.AsyncClient(timeout=30) as client:
        results = await asyncio.gather(*(c.call(client) for c in callers))
    if [r.status for r in results] != [201] * n:
        nodes = httpx.get(f"{internal_url(fleet.api_url)}/healthz", timeout=5).json()
        workers = {k: fleet.worker_health(k).json() for k in fleet.workers}
        raise AssertionError(f"{[r.error for r in results]}\nfleet: {nodes}\nworkers: {workers}")
    await asyncio.gather(*(c.wait_open(20) for c in callers))
    await asyncio.gather(
        *(c.wait_for(lambda m: m.get("state") == "listening", 20) for c in callers)
    )
    return callers


async def end_and_close(fleet: Fleet, callers: list[Caller]) -> None:
    """End every call a test placed (DELETE through the api: a closed peer connection alone
    ends a call only once the node notices), so the next test starts with an empty fleet."""
    async with httpx.AsyncClient(timeout=5) as client:
        for c in callers:
            if c.result.call_id:
                r = await client.delete(f"{fleet.api_url}/v1/calls/{c.result.call_id}")
                assert r.status_code in (204, 404), r.text
    for c in callers:
        await c.close()


async def no_calls_left(fleet: Fleet) -> None:
    await await_http(
        f"{internal_url(fleet.api_url)}/healthz",
        30,
        ok=lambda r: r.status_code == 200 and r.json()["fleet_active_calls"] == 0,
    )


def ended(caller: Caller) -> list[dict]:
    return [m for m in caller.result.messages if m.get("state") == "ended"]


async def hang_up(callers: list[Caller], reason: str = "hangup") -> None:
    for c in callers:
        c.send({"v": 1, "type": "hangup"})
    waits = [c.wait_for(lambda m: m.get("state") == "ended", 15) for c in callers]
    outcomes = await asyncio.gather(*waits, return_exceptions=True)
    stuck = [
        (c.result.node_id, c.result.call_id, c.pc.connectionState, c.channel_open)
        for c, o in zip(callers, outcomes, strict=True)
        if isinstance(o, BaseException)
    ]
    assert not stuck, f"no 'ended' after hang-up (node, call, pc state, channel open): {stuck}"
    for c in callers:
        assert ended(c)[0]["reason"] == reason, ended(c)
        await c.close()


async def test_calls_land_on_namespace_hosts_and_any_api_ends_them(fleet: Fleet) -> None:
    callers = await place_calls(fleet, 6)
    nodes = Counter(c.result.node_id for c in callers)
    assert set(nodes) <= {"w1", "w2", "w3"} and len(nodes) >= 2, nodes
    # The api holds no call state: DELETE finds the node through the registry.
    victim = callers.pop()
    r = httpx.delete(f"{fleet.api_url}/v1/calls/{victim.result.call_id}", timeout=5)
    assert r.status_code == 204
    msg = await victim.wait_for(lambda m: m.get("state") == "ended", 10)
    assert msg["reason"] == "remote_hangup"
    await victim.close()
    await hang_up(callers)
    # Unauthenticated hand-off straight to a worker is refused.
    host, _ = fleet.workers["w1"]
    r = httpx.post(f"http://{host.ip}:8100/internal/calls", json={}, timeout=5)
    assert r.status_code == 401
    metrics = httpx.get(f"{internal_url(fleet.api_url)}/metrics", timeout=5).text
    # Every outcome's series exists from the start (at 0): these calls counted.
    assert re.search(r'^dragoman_api_calls_total\{outcome="answered"\} [1-9]', metrics, re.M)
    assert "dragoman_worker_calls_active" in httpx.get(f"http://{host.ip}:8100/metrics").text


TICKET_SECRET = "fleet-ticket-secret-0123456789abcdef0123456789"


async def test_two_api_replicas_share_the_abuse_limits(fleet: Fleet) -> None:
    """Limits live in Redis: a subject or an address cannot get more by spreading its
    requests over the api replicas behind a load balancer."""
    limits = {
        **fleet.env,
        "DRAGOMAN_CALL_TOKEN_SECRET": TICKET_SECRET,
        "DRAGOMAN_CALLS_PER_MINUTE_PER_IP": "6",
        "DRAGOMAN_CONCURRENT_CALLS_PER_SUBJECT": "1",
    }
    replicas = {
        port: fleet.api_host.popen(
            [dragoman_exe(), "api", "--host", fleet.api_host.ip, "--port", str(port)]
            + ["--registry", fleet.registry],
            limits,
            fleet.logs / f"api-{port}.log",
        )
        for port in (8001, 8002)
    }
    a, b = (f"http://{fleet.api_host.ip}:{port}" for port in replicas)
    callers: list[Caller] = []
    try:
        for url in (a, b):
            await await_http(f"{internal_url(url)}/healthz", 30, ok=lambda r: r.status_code == 200)
        ticket = mint(TICKET_SECRET, "zoe", 120)

        async def place(url: str) -> Caller:
            caller = Caller(url, send_audio=False, ticket=ticket)
            callers.append(caller)
            await caller.call()
            return caller

        first = await place(a)
        assert first.result.status == 201, first.result.error
        refused = await place(b)  # same subject, other replica: one call at once in all
        assert refused.result.status == 429, refused.result
        # The call ends through replica B; its node releases it in Redis, and the subject
        # may call again through either replica. (With tickets, ending it takes its control
        # token, which the other replica checks with the shared secret.)
        own = {"Authorization": f"Bearer {first.result.control_token}"}
        r = httpx.delete(f"{b}/v1/calls/{first.result.call_id}", headers=own, timeout=5)
        assert r.status_code == 204
        await first.wait_for(lambda m: m.get("state") == "ended", 10)
        # The page hears `ended` before the node releases the call in Redis (once its agent
        # has exited): only then is the subject's one call free again.
        await no_calls_left(fleet)
        again = await place(b)
        assert again.result.status == 201, again.result.error

        # Three requests above, three more spread over both replicas use the address'
        # allowance of 6 per minute; the next is refused whichever replica gets it.
        bad = {"Authorization": f"Bearer {ticket}"}
        for url in (a, b, a):
            r = httpx.post(f"{url}/v1/calls", json={}, headers=bad, timeout=5)
            assert r.status_code == 400, r.text
        for url in (a, b):
            r = httpx.post(f"{url}/v1/calls", json={}, headers=bad, timeout=5)
            assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited", r.text
            assert int(r.headers["retry-after"]) >= 1
    finally:
        await end_and_close(fleet, callers)
        for proc in replicas.values():
            proc.terminate()
        for proc in replicas.values():
            proc.wait(10)


async def test_a_rooms_guest_lands_on_its_hosts_node(fleet: Fleet) -> None:
    """A room's two agents share a node (they hand each other audio locally): the invite
    reserves the guest's slot on the host's node, and the guest's call goes there, whichever
    api replica or node the ranking would otherwise pick."""
    host = Caller(fleet.api_url, send_audio=False)
    guest: Caller | None = None
    try:
        assert (await host.call()).status == 201
        await host.wait_open()
        await host.wait_for(lambda m: m.get("state") == "listening", 20)
        r = httpx.post(
            f"{fleet.api_url}/v1/calls/{host.result.call_id}/invite",
            json={"control_token": host.result.control_token},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        guest = Caller(fleet.api_url, source="en", send_audio=False, room=r.json()["room_token"])
        result = await guest.call()
        assert result.status == 201, result.error
        assert guest.result.node_id == host.result.node_id
        joined = await host.wait_for(lambda m: m.get("type") == "room", 20)
        assert joined["event"] == "joined"
    finally:
        await end_and_close(fleet, [host] + ([guest] if guest is not None else []))


async def test_redis_restart_gives_quick_503_then_recovers(fleet: Fleet) -> None:
    assert fleet.redis is not None
    running = await place_calls(fleet, 2)  # calls that go on through the outage
    fleet.redis.terminate()
    fleet.redis.wait(10)
    t0 = time.monotonic()
    caller = Caller(fleet.api_url, send_audio=False)
    result = await caller.call()
    await caller.close()
    took = time.monotonic() - t0
    assert result.status == 503 and result.error["code"] == "registry_unavailable", result
    assert result.retry_after is not None
    assert took < 5, f"503 took {took:.1f} s while Redis was down"
    assert fleet.health().status_code == 503

    # One worker is held stopped across the restart so that its calls are surely unknown
    # to the new Redis when their page reconnects its control channel: the api must wait
    # for that worker's next heartbeat, not answer 4404, which the page takes as final
    # (found by bench soak --fleet: a page reconnecting in that gap gave up its call).
    page = running[0]
    _, host_proc = fleet.workers[page.result.node_id]
    host_proc.send_signal(signal.SIGSTOP)
    try:
        fleet.start_redis()  # empty: the workers' heartbeats bring the nodes back
        await await_http(
            f"{internal_url(fleet.api_url)}/healthz",
            30,
            ok=lambda r: r.status_code == 200 and r.json()["nodes"] == 2,
        )
        mark = page.mark()
        await page.open_control()
        await asyncio.sleep(1.0)
    finally:
        host_proc.send_signal(signal.SIGCONT)
    try:
        await page.wait_for(lambda m: m.get("type") == "languages", 10, since=mark)
    except TimeoutError:
        pytest.fail(f"control channel after the Redis restart: {page.result.control_close}")
    await await_http(
        f"{internal_url(fleet.api_url)}/healthz",
        30,
        ok=lambda r: r.status_code == 200 and r.json()["nodes"] == 3,
    )
    # …and the calls they are running (found by bench soak --fleet: the registry counted 0
    # on full nodes after a restart, over-filled them, and a page that reconnected its
    # control channel got 4404 because the call's node was forgotten).
    await await_http(
        f"{internal_url(fleet.api_url)}/healthz",
        10,
        ok=lambda r: r.status_code == 200 and r.json()["fleet_active_calls"] == 2,
    )
    await hang_up(running)
    callers = await place_calls(fleet, 2)
    await hang_up(callers)


async def test_drain_finishes_every_call_and_exits_zero(fleet: Fleet) -> None:
    await no_calls_left(fleet)  # the fleet's 36 slots: 30 calls now, 4 newcomers after the drain
    callers = await place_calls(fleet, 30)
    by_node = Counter(c.result.node_id for c in callers)
    assert sum(by_node.values()) == 30 and len(by_node) == 3, by_node
    target = by_node.most_common(1)[0][0]
    _, proc = fleet.workers[target]

    proc.send_signal(signal.SIGTERM)
    # DRAINING at once: its readiness probe fails, and the registry stops offering it.
    await await_http(
        f"http://{fleet.workers[target][0].ip}:8100/healthz",
        5,
        ok=lambda r: r.status_code == 503 and r.json()["state"] == "DRAINING",
    )
    proc.send_signal(signal.SIGTERM)  # a second SIGTERM is not a crash
    newcomers = await place_calls(fleet, 4)
    assert all(c.result.node_id != target for c in newcomers), [c.result.node_id for c in newcomers]
    await asyncio.sleep(2)
    assert all(not ended(c) for c in callers), "a call was cut during the drain"
    assert proc.poll() is None, "the worker left before its calls ended"

    draining = [c for c in callers if c.result.node_id == target]
    await hang_up(draining)  # the calls finish normally, by the caller hanging up
    assert proc.wait(30) == 0, fleet.log(target)
    others = [c for c in callers if c.result.node_id != target] + newcomers
    assert all(not ended(c) for c in others)
    await hang_up(others)
    # Workers release slots as each agent process exits, a moment after "ended".
    await await_http(
        f"{internal_url(fleet.api_url)}/healthz",
        10,
        ok=lambda r: r.json()["nodes"] == 2 and r.json()["fleet_active_calls"] == 0,
    )
    del fleet.workers[target]


async def test_killed_worker_is_reported_and_avoided(fleet: Fleet) -> None:
    names = sorted(fleet.workers)
    assert len(names) >= 2
    callers = await place_calls(fleet, 4)
    victim = Counter(c.result.node_id for c in callers).most_common(1)[0][0]
    _, proc = fleet.workers[victim]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(5)

    lost = [c for c in callers if c.result.node_id == victim]
    survivors = [c for c in callers if c.result.node_id != victim]
    for c in lost:
        msg = await c.wait_for(lambda m: m.get("state") == "ended", 15)
        assert msg["reason"] == "agent_lost", msg
    # After node_ttl the dead node is never chosen.
    await await_http(
        f"{internal_url(fleet.api_url)}/healthz",
        10,
        ok=lambda r: r.status_code == 200 and r.json()["nodes"] == len(names) - 1,
    )
    newcomers = await place_calls(fleet, 3)
    assert all(c.result.node_id != victim for c in newcomers)
    assert all(not ended(c) for c in survivors), "a call on a healthy node was affected"
    for c in lost:
        await c.close()
    await hang_up(survivors + newcomers)
