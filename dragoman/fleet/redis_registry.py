"""Redis registry for a fleet: several api replicas and workers share one Redis.

Keys (``P`` = prefix):
  ``P:nodes``            SET of node ids
  ``P:node:{id}``        HASH of the node's report fields + ``hb_ms`` (Redis server clock)
  ``P:node:{id}:calls``  ZSET call id -> expiry in ms; a confirmed call scores +inf
  ``P:node:{id}:local``  ZSET the same for the calls that also hold a local-pipeline slot
  ``P:call:{call_id}``   STRING node id; expires with the reservation, persisted on confirm
  ``P:rate:{key}``       STRING a rate limit's GCRA theoretical arrival time (ms)
  ``P:hold:{key}``       ZSET call id -> admitted at (ms): a concurrency limit's calls
  ``P:ended:{call_id}``  a call released in the last 2 minutes (the limits stop counting it;
                        its value: the node it was on)

Every write is a Lua script reading ``TIME`` on the server, so heartbeat freshness and
reservation expiry are judged on one clock however skewed the hosts are, and a reserve's check
and update are one atomic step. Scripts derive keys from the prefix (the candidate list is
dynamic), so this targets a single Redis primary, not Redis Cluster.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from dragoman.fleet.limits import ConcurrencyRule, RateRule
from dragoman.fleet.registry import (
    NodeInfo,
    NodeReport,
    RegistryUnavailable,
    Reservation,
    check_ttl,
)

T = TypeVar("T")

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Drops the node's calls and the call -> node keys that still point at it.
_FORGET_CALLS = """
local function forget_calls(prefix, id)
  local ck = prefix .. ':node:' .. id .. ':calls'
  for _, c in ipairs(redis.call('ZRANGE', ck, 0, -1)) do
    local k = prefix .. ':call:' .. c
    if redis.call('GET', k) == id then redis.call('DEL', k) end
  end
  redis.call('DEL', ck, prefix .. ':node:' .. id .. ':local')
end
"""

# Frees the call's slot on its node (in both ZSETs) and drops its call -> node key; returns
# the node it was on, or false.
_DROP_CALL = """
local function drop_call(prefix, call_id)
  local call_key = prefix .. ':call:' .. call_id
  local id = redis.call('GET', call_key)
  if id then
    redis.call('ZREM', prefix .. ':node:' .. id .. ':calls', call_id)
    redis.call('ZREM', prefix .. ':node:' .. id .. ':local', call_id)
    redis.call('DEL', call_key)
  end
  return id
end
"""

# ARGV: prefix, node id, forget (0|1), n, n call ids, m, m local call ids,
#       h, h × (call id, hold key, max age ms), field, value, ...
# A heartbeat (forget 0) for a node this Redis does not know restores the node's calls as
# confirmed — Redis restarted without persistence — and their concurrency holds (admitted
# now, the key kept at least the hold's max age), except those released since (their
# ``ended`` key). Returns 1 when it restored, else 0.
_UPSERT = (
    _NOW_MS
    + _FORGET_CALLS
    + """
local prefix, id = ARGV[1], ARGV[2]
local nk = prefix .. ':node:' .. id
local lost = ARGV[3] == '0' and redis.call('EXISTS', nk) == 0
if ARGV[3] == '1' then forget_calls(prefix, id) end
local n = tonumber(ARGV[4])
local m = tonumber(ARGV[5 + n])
local h = tonumber(ARGV[6 + n + m])
local fields = 7 + n + m + 3 * h
redis.call('HSET', nk, 'hb_ms', string.format('%.0f', now), unpack(ARGV, fields))
redis.call('SADD', prefix .. ':nodes', id)
if not lost then return 0 end
for i = 5, 4 + n do
  local c = ARGV[i]
  if redis.call('EXISTS', prefix .. ':ended:' .. c) == 0 then
    redis.call('ZADD', nk .. ':calls', '+inf', c)
    redis.call('SET', prefix .. ':call:' .. c, id)
  end
end
for i = 6 + n, 5 + n + m do
  local c = ARGV[i]
  if redis.call('EXISTS', prefix .. ':ended:' .. c) == 0 then
    redis.call('ZADD', nk .. ':local', '+inf', c)
  end
end
for i = 7 + n + m, 6 + n + m + 3 * h, 3 do
  local c, hk, age = ARGV[i], prefix .. ':hold:' .. ARGV[i + 1], tonumber(ARGV[i + 2])
  if redis.call('EXISTS', prefix .. ':ended:' .. c) == 0 then
    redis.call('ZADD', hk, 'NX', string.format('%.0f', now), c)
    if redis.call('PTTL', hk) < age then redis.call('PEXPIRE', hk, age) end
  end
end
return 1
"""
)

# ARGV: prefix, node id
_REMOVE = (
    _FORGET_CALLS
    + """
local prefix, id = ARGV[1], ARGV[2]
forget_calls(prefix, id)
redis.call('DEL', prefix .. ':node:' .. id)
redis.call('SREM', prefix .. ':nodes', id)
"""
)

# ARGV: prefix, call id, ttl ms, node ttl ms, local (0|1), ranked node id, ...
# Returns {node id, address} or nil. A local call takes a slot in both ZSETs, with the same
# expiry. A node hash without local_capacity (a worker from before it) counts its call slots.
_RESERVE = (
    _NOW_MS
    + _DROP_CALL
    + """
local prefix, call_id = ARGV[1], ARGV[2]
local ttl_ms, node_ttl_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local is_local = ARGV[5] == '1'
local call_key = prefix .. ':call:' .. call_id
redis.call('DEL', prefix .. ':ended:' .. call_id)
drop_call(prefix, call_id)
for i = 6, #ARGV do
  local id = ARGV[i]
  local nk = prefix .. ':node:' .. id
  local f = redis.call('HMGET', nk, 'state', 'capacity', 'hb_ms', 'address', 'local_capacity')
  if f[1] == 'READY' and f[3] and now - tonumber(f[3]) <= node_ttl_ms then
    local ck, lk = nk .. ':calls', nk .. ':local'
    redis.call('ZREMRANGEBYSCORE', ck, '-inf', now)
    local room = redis.call('ZCARD', ck) < tonumber(f[2])
    if room and is_local then
      redis.call('ZREMRANGEBYSCORE', lk, '-inf', now)
      room = redis.call('ZCARD', lk) < tonumber(f[5] or f[2])
    end
    if room then
      local expiry = string.format('%.0f', now + ttl_ms)
      redis.call('ZADD', ck, expiry, call_id)
      if is_local then redis.call('ZADD', lk, expiry, call_id) end
      redis.call('SET', call_key, id, 'PX', ttl_ms)
      return {id, f[4]}
    end
  end
end
return false
"""
)

# ARGV: prefix, call id. Returns 1 if confirmed.
_CONFIRM = (
    _NOW_MS
    + """
local prefix, call_id = ARGV[1], ARGV[2]
local call_key = prefix .. ':call:' .. call_id
local id = redis.call('GET', call_key)
if not id then return 0 end
local ck = prefix .. ':node:' .. id .. ':calls'
local score = redis.call('ZSCORE', ck, call_id)
if not score or (score ~= 'inf' and tonumber(score) <= now) then
  redis.call('ZREM', ck, call_id)
  redis.call('DEL', call_key)
  return 0
end
redis.call('ZADD', ck, '+inf', call_id)
local lk = prefix .. ':node:' .. id .. ':local'
if redis.call('ZSCORE', lk, call_id) then redis.call('ZADD', lk, '+inf', call_id) end
redis.call('PERSIST', call_key)
return 1
"""
)

# ARGV: prefix, call id
_RELEASE = (
    _DROP_CALL
    + """
local prefix, call_id = ARGV[1], ARGV[2]
local id = drop_call(prefix, call_id)
-- Remembered a while, so the concurrency limits stop counting it at once (see _HOLD).
-- Its value is the node it was on ('' if unknown): a reconnecting page can still reach it.
-- A second release (the call is gone already) keeps the node the first one wrote.
if id then
  redis.call('SET', prefix .. ':ended:' .. call_id, id, 'EX', 120)
else
  redis.call('SET', prefix .. ':ended:' .. call_id, '', 'EX', 120, 'NX')
end
"""
)

# GCRA, as dragoman.rate.gcra. ARGV: prefix, key, limit, window ms.
# Returns 0 when allowed, else the milliseconds until a request would be.
_TAKE_RATE = (
    _NOW_MS
    + """
local k = ARGV[1] .. ':rate:' .. ARGV[2]
local limit, window = tonumber(ARGV[3]), tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', k))
if not tat or tat < now then tat = now end
local new_tat = tat + window / limit
local allow_at = new_tat - window
if allow_at > now then return math.ceil(allow_at - now) end
redis.call('SET', k, string.format('%.0f', new_tat), 'PX', math.ceil(new_tat - now) + 1)
return 0
"""
)

# Concurrency, as dragoman.fleet.limits.live_holds: a hold counts while its call is known on
# a live node, or, not yet reserved (nor released), for pending ms after admission.
# ARGV: prefix, key, call id, limit, max age ms, pending ms, node ttl ms. Returns 1 if held.
_HOLD = (
    _NOW_MS
    + """
local prefix = ARGV[1]
local k = prefix .. ':hold:' .. ARGV[2]
local limit, max_age = tonumber(ARGV[4]), tonumber(ARGV[5])
local pending, node_ttl = tonumber(ARGV[6]), tonumber(ARGV[7])
redis.call('ZREMRANGEBYSCORE', k, '-inf', now - max_age - 1)
local held = redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')
local count = 0
for i = 1, #held, 2 do
  local c, at = held[i], tonumber(held[i + 1])
  local alive = false
  if redis.call('EXISTS', prefix .. ':ended:' .. c) == 0 then
    local node = redis.call('GET', prefix .. ':call:' .. c)
    if node then
      local hb = redis.call('HGET', prefix .. ':node:' .. node, 'hb_ms')
      alive = hb ~= false and now - tonumber(hb) <= node_ttl
    else
      alive = now - at <= pending
    end
  end
  if alive then count = count + 1 else redis.call('ZREM', k, c) end
end
if count >= limit then return 0 end
redis.call('ZADD', k, string.format('%.0f', now), ARGV[3])
redis.call('PEXPIRE', k, max_age)
return 1
"""
)

# ARGV: prefix[, node id]: one node, or every node when no id is given.
# Returns {now ms, {id, load, {field, value, ...}, local load}, ...}.
_NODES = (
    _NOW_MS
    + """
local prefix = ARGV[1]
local ids = redis.call('SMEMBERS', prefix .. ':nodes')
if ARGV[2] then ids = {ARGV[2]} end
local out = {now}
for _, id in ipairs(ids) do
  local nk = prefix .. ':node:' .. id
  local h = redis.call('HGETALL', nk)
  if #h > 0 then
    redis.call('ZREMRANGEBYSCORE', nk .. ':calls', '-inf', now)
    redis.call('ZREMRANGEBYSCORE', nk .. ':local', '-inf', now)
    local load = redis.call('ZCARD', nk .. ':calls')
    out[#out + 1] = {id, load, h, redis.call('ZCARD', nk .. ':local')}
  end
end
return out
"""
)


class RedisRegistry:
    """Registry in Redis.

    Each round trip to Redis (connect, send, reply) is bounded by ``op_timeout_s``; waiting for
    a pooled connection during a burst is bounded separately by ``queue_timeout_s``, so a burst
    on a healthy Redis queues instead of failing. Past either bound, or when Redis refuses
    connections, operations raise ``RegistryUnavailable``; the pool reconnects by itself once
    Redis is back.
    """

    def __init__(
        self,
        url: str,
        node_ttl_s: float = 3.0,
        prefix: str = "dragoman",
        op_timeout_s: float = 0.5,
        max_connections: int = 64,
        queue_timeout_s: float = 2.0,
    ):
        self.node_ttl_s = node_ttl_s
        self._prefix = prefix
        # A bounded pool: Redis runs scripts one at a time, so more connections add no
        # throughput, and a burst queues here instead of opening a socket per request.
        # One immediate retry on a connection error covers a pooled socket that went stale
        # while Redis restarted; a retry is safe because every script is idempotent (a
        # re-run reserve moves the call's one slot rather than taking a second).
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=queue_timeout_s,
            socket_timeout=op_timeout_s,
            socket_connect_timeout=op_timeout_s,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            decode_responses=True,
        )
        self._redis = Redis.from_pool(pool)
        self._upsert = self._redis.register_script(_UPSERT)
        self._remove = self._redis.register_script(_REMOVE)
        self._reserve = self._redis.register_script(_RESERVE)
        self._confirm = self._redis.register_script(_CONFIRM)
        self._release = self._redis.register_script(_RELEASE)
        self._nodes = self._redis.register_script(_NODES)
        self._take_rate = self._redis.register_script(_TAKE_RATE)
        self._hold = self._redis.register_script(_HOLD)

    async def register(self, report: NodeReport) -> None:
        await self._io(self._upsert(args=self._upsert_args(report, forget=True)))

    async def heartbeat(self, report: NodeReport) -> bool:
        restored = await self._io(self._upsert(args=self._upsert_args(report, forget=False))) == 1
        if restored:  # Redis restarted (empty) without an error reaching us
            await self._close_idle_sockets()
        return restored

    async def remove_node(self, node_id: str) -> None:
        await self._io(self._remove(args=[self._prefix, node_id]))

    async def nodes(self) -> list[NodeInfo]:
        reply = await self._io(self._nodes(args=[self._prefix]))
        return sorted(self._infos(reply), key=lambda n: n.node_id)

    async def node(self, node_id: str) -> NodeInfo | None:
        infos = self._infos(await self._io(self._nodes(args=[self._prefix, node_id])))
        return infos[0] if infos else None

    async def reserve(
        self, call_id: str, ranked: list[str], ttl_s: float, local: bool = False
    ) -> Reservation | None:
        check_ttl(ttl_s)
        ttl_ms = max(1, round(ttl_s * 1000))
        node_ttl_ms = round(self.node_ttl_s * 1000)
        args = [self._prefix, call_id, ttl_ms, node_ttl_ms, int(local), *ranked]
        reply = await self._io(self._reserve(args=args))
        return None if reply is None else Reservation(call_id, reply[0], reply[1])

    async def confirm(self, call_id: str) -> bool:
        return await self._io(self._confirm(args=[self._prefix, call_id])) == 1

    async def release(self, call_id: str) -> None:
        await self._io(self._release(args=[self._prefix, call_id]))

    async def lookup(self, call_id: str) -> str | None:
        return await self._io(self._redis.get(f"{self._prefix}:call:{call_id}"))

    async def ended_on(self, call_id: str) -> str | None:
        return await self._io(self._redis.get(f"{self._prefix}:ended:{call_id}")) or None

    async def take_rate(self, rule: RateRule) -> float:
        window_ms = round(rule.window_s * 1000)
        args = [self._prefix, rule.key, rule.limit, window_ms]
        return int(await self._io(self._take_rate(args=args))) / 1000

    async def hold(
        self, rule: ConcurrencyRule, call_id: str, max_age_s: float, pending_s: float
    ) -> bool:
        args = [
            self._prefix,
            rule.key,
            call_id,
            rule.limit,
            round(max_age_s * 1000),
            round(pending_s * 1000),
            round(self.node_ttl_s * 1000),
        ]
        return int(await self._io(self._hold(args=args))) == 1

    async def unhold(self, key: str, call_id: str) -> None:
        await self._io(self._redis.zrem(f"{self._prefix}:hold:{key}", call_id))

    async def close(self) -> None:
        await self._redis.aclose()

    async def _io(self, op: Awaitable[T]) -> T:
        # The bounds themselves are the pool's and sockets' timeouts (see __init__); an outer
        # deadline here would also count the queue, failing healthy bursts.
        try:
            return await op
        except RedisConnectionError as e:
            await self._close_idle_sockets()  # Redis went away: every idle one is dead too
            raise RegistryUnavailable(f"redis: {e!r}") from e
        except RedisTimeoutError as e:
            raise RegistryUnavailable(f"redis: {e!r}") from e

    async def _close_idle_sockets(self) -> None:
        """Close the pool's idle connections (they reconnect when next used). After a Redis
        restart each one is dead, and the pool, last-in first-out, reuses only the few on top:
        the rest held their fds for good (``bench soak --fleet``: 9-15 per worker each time)."""
        with contextlib.suppress(Exception):  # best effort: nothing here may fail the caller
            await self._redis.connection_pool.disconnect(inuse_connections=False)

    def _upsert_args(self, r: NodeReport, forget: bool) -> list[Any]:
        fields = {
            "address": r.address,
            "capacity": r.capacity,
            "idle": r.idle,
            "state": r.state,
            "local_capacity": r.local_capacity,
            "local_load": r.local_load,  # the worker's count; NodeInfo's is the ZSET's
        }
        if forget:
            calls: list[Any] = [0, 0, 0]
        else:
            holds = [x for c, k, age in r.holds for x in (c, k, round(age * 1000))]
            calls = [len(r.calls), *r.calls, len(r.local_calls), *r.local_calls]
            calls += [len(r.holds), *holds]
        return [
            self._prefix,
            r.node_id,
            int(forget),
            *calls,
            *(x for kv in fields.items() for x in kv),
        ]

    def _infos(self, reply: list[Any]) -> list[NodeInfo]:
        now_ms, entries = reply[0], reply[1:]
        infos = []
        for node_id, load, flat, local_load in entries:
            h = dict(zip(flat[::2], flat[1::2], strict=True))
            age = max(0.0, (now_ms - int(h["hb_ms"])) / 1000)
            infos.append(
                NodeInfo(
                    node_id=node_id,
                    address=h["address"],
                    capacity=int(h["capacity"]),
                    idle=int(h["idle"]),
                    state=h["state"],
                    load=int(load),
                    heartbeat_age_s=age,
                    alive=age <= self.node_ttl_s,
                    local_capacity=int(h.get("local_capacity", h["capacity"])),
                    local_load=int(local_load),
                )
            )
        return infos
