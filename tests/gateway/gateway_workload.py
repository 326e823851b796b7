"""A redis-py workload over every data type through the gateway, checked against its own model.

Run inside the client's namespace (``ip netns exec NS python gateway_workload.py PORT STOP OUT``)
until the STOP file exists. One connection, one writer per key: every reply is known exactly
in advance, so any lost write, stale read or double application shows as a mismatch. Scripts
(EVALSHA through redis-py's Script, EVAL_RO) and functions (FCALL, FCALL_RO) are among the
operations, each over keys of one slot. Writes a JSON summary to OUT.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import redis

KEYS = 210
KINDS = 7
#: Two keys of one slot: a counter and a list of its last five values, in one script.
SCRIPT = """
local n = redis.call('INCR', KEYS[1])
redis.call('RPUSH', KEYS[2], n)
redis.call('LTRIM', KEYS[2], -5, -1)
return {n, redis.call('LLEN', KEYS[2])}
"""
LIST = "return redis.call('LRANGE', KEYS[1], 0, -1)"
LIBRARY = """#!lua name=workload
redis.register_function('wl_add', function(keys, args)
  return redis.call('HINCRBY', keys[1], args[1], 1)
end)
redis.register_function{function_name = 'wl_get', callback = function(keys, args)
  return redis.call('HGET', keys[1], args[1])
end, flags = {'no-writes'}}
"""


def _list_key(counter: bytes) -> bytes:
    return counter[:-1] + b"l"


def main(port: int, stop: Path, out: Path) -> None:
    # RESP2: the workload checks values; RESP3 replies are checked byte for byte elsewhere.
    r = redis.Redis(port=port, socket_timeout=10, protocol=2)
    rnd = random.Random(15)
    model: dict[bytes, object] = {}
    ops = mismatches = errors = 0
    problems: list[str] = []
    big = b"{wl}big"
    big_fields = 0
    script = r.register_script(SCRIPT)
    r.function_load(LIBRARY, replace=True)

    def check(what: str, got: object, want: object) -> None:
        nonlocal mismatches
        if got != want:
            mismatches += 1
            if len(problems) < 20:
                problems.append(f"{what}: got {got!r}, want {want!r}")

    (out.parent / "ready").touch()
    while not stop.exists():
        i = rnd.randrange(KEYS)
        kind = i % KINDS
        key = b"wl:%d:%d" % (kind, i) if kind != 5 else b"{wl:5:%d}c" % i
        try:
            if kind == 0:  # string counter
                want = int(model.get(key, 0)) + 1  # type: ignore[call-overload]
                check("INCR", r.incr(key), want)
                model[key] = want
                check("GET", r.get(key), str(want).encode())
            elif kind == 1:  # hash
                h = dict(model.get(key, {}))  # type: ignore[call-overload]
                f = b"f%d" % rnd.randrange(5)
                h[f] = h.get(f, 0) + 2
                check("HINCRBY", r.hincrby(key, f, 2), h[f])
                model[key] = h
                check("HGETALL", r.hgetall(key), {k: str(v).encode() for k, v in h.items()})
            elif kind == 2:  # list
                items = list(model.get(key, []))  # type: ignore[call-overload]
                v = b"%d" % ops
                items.insert(0, v)
                check("LPUSH", r.lpush(key, v), len(items))
                if len(items) > 8:
                    check("RPOP", r.rpop(key), items.pop())
                model[key] = items
                check("LRANGE", r.lrange(key, 0, -1), items)
            elif kind == 3:  # set
                s = set(model.get(key, set()))  # type: ignore[call-overload]
                m = b"m%d" % rnd.randrange(10)
                check("SADD", r.sadd(key, m), 0 if m in s else 1)
                s.add(m)
                model[key] = s
                check("SMEMBERS", r.smembers(key), s)
            elif kind == 5:  # a script over a counter and a list of one slot
                n, items = model.get(key, (0, []))  # type: ignore[misc]
                n += 1
                items = [*items, str(n).encode()][-5:]
                check("EVALSHA", script(keys=[key, _list_key(key)]), [n, len(items)])
                model[key] = (n, items)
                check("EVAL_RO", r.eval_ro(LIST, 1, _list_key(key)), items)
            elif kind == 6:  # functions
                h = dict(model.get(key, {}))  # type: ignore[call-overload]
                f = b"f%d" % rnd.randrange(3)
                h[f] = h.get(f, 0) + 1
                check("FCALL", r.fcall("wl_add", 1, key, f), h[f])
                model[key] = h
                check("FCALL_RO", r.fcall_ro("wl_get", 1, key, f), str(h[f]).encode())
            else:  # sorted set
                z = dict(model.get(key, {}))  # type: ignore[call-overload]
                m = b"m%d" % rnd.randrange(5)
                z[m] = z.get(m, 0) + 1
                check("ZINCRBY", r.zincrby(key, 1, m), float(z[m]))
                model[key] = z
                check("ZSCORE", r.zscore(key, m), float(z[m]))
            if big_fields < 1000 and ops % 50 == 0:  # a 1,000-field hash, 100 fields at a time
                fields = {b"f%d" % (big_fields + j): b"%d" % j for j in range(100)}
                check("HSET big", r.hset(big, mapping=fields), 100)
                big_fields += 100
            ops += 1
        except redis.RedisError as e:
            errors += 1
            if len(problems) < 20:
                problems.append(f"{type(e).__name__}: {e}")
        time.sleep(0.001)
    check("HLEN big", r.hlen(big), big_fields)
    for key, want in model.items():  # the final state, read back
        kind = int(key.split(b":")[1])
        if kind == 5:
            n, items = want  # type: ignore[misc]
            check("final script counter", r.get(key), str(n).encode())
            check("final script list", r.lrange(_list_key(key), 0, -1), items)
            continue
        if kind == 6:
            check("final HGETALL", r.hgetall(key), {k: str(v).encode() for k, v in want.items()})  # type: ignore[union-attr]
            continue
        got = [r.get, r.hgetall, lambda k: r.lrange(k, 0, -1), r.smembers, r.zrange][kind](
            *([key] if kind != 4 else [key, 0, -1])
        )
        if kind == 0:
            check("final GET", got, str(want).encode())
        elif kind == 1:
            check("final HGETALL", got, {k: str(v).encode() for k, v in want.items()})  # type: ignore[union-attr]
        elif kind == 2 or kind == 3:
            check("final", got, want)
        else:
            check("final ZRANGE", sorted(got), sorted(want))  # type: ignore[arg-type]
    out.write_text(
        json.dumps(
            {
                "ops": ops,
                "mismatches": mismatches,
                "errors": errors,
                "problems": problems,
                "keys": [k.decode() for k in model]
                + [_list_key(k).decode() for k in model if k.startswith(b"{wl:5:")]
                + [big.decode()],
                "big_fields": big_fields,
            }
        )
    )


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
