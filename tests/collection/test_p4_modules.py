"""The P4Runtime modules of netmigrate.core (p4_pipeline, p4_table_entry, p4_clone_session,
p4_info, p4_register_info, slot_map) in real playbooks against a real lab switch process:
check mode changes nothing (read back over P4Runtime), a second run changes nothing, and bad
input or an unreachable / refusing switch fails clearly with nothing changed."""

from __future__ import annotations

import asyncio
import select
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from collection_helpers import Ansible, AnsibleRun
from finsy.proto import p4r

from netmigrate.bench.redis_server import RedisServer, start_redis
from netmigrate.lab.forwarding import SERVICE_IP, lab_servers, netmigrate_entries
from netmigrate.lab.switch_process import SwitchProcess, run_switch
from netmigrate.p4rt import (
    Keyspace,
    P4RTSession,
    PipelineConfig,
    SlotEntry,
    current_cookie,
    describe,
    ensure_clone_sessions,
    ensure_table_entries,
    install_pipeline,
    read_clone_sessions,
    read_slot_map,
    read_table_entries,
)
from netmigrate.p4rt.session import load_p4info
from netmigrate.resources import p4info_path

DEVICE_CONFIG = b'{"lab": "device config of the collection tests"}'
SERVICE_PORT = 50000
KEYSPACE_ENTRY = {
    "table": "NetMigrateIngress.keyspace",
    "match": {"hdr.ipv4.dstAddr": SERVICE_IP, "hdr.udp.dstPort": SERVICE_PORT},
    "action": "NetMigrateIngress.set_keyspace",
    "params": {"keyspace_id": 1, "default_owner": 1, "slot_base": 0},
}


@pytest.fixture
def switch() -> Iterator[SwitchProcess]:
    with run_switch() as sw:
        yield sw


@pytest.fixture
def device_config(tmp_path: Path) -> Path:
    path = tmp_path / "device_config.json"
    path.write_bytes(DEVICE_CONFIG)
    return path


def on_switch(address: str, fn: Callable[[P4RTSession], Awaitable[Any]]) -> Any:
    """Run ``fn(session)`` in a short session of the test itself (to read back state)."""

    async def main() -> Any:
        async with P4RTSession(address, election_id=1) as s:
            return await fn(s)

    return asyncio.run(main())


def install(address: str) -> int:
    cfg = PipelineConfig.load(p4info_path(), DEVICE_CONFIG)
    on_switch(address, lambda s: install_pipeline(s, cfg))
    return cfg.cookie


def entries_on(address: str, tables: list[str] | None = None) -> list[dict[str, Any]]:
    async def read(s: P4RTSession) -> list[dict[str, Any]]:
        return sorted(
            (describe(s, te) for te in await read_table_entries(s, tables or [])),
            key=repr,
        )

    return on_switch(address, read)


def play(ansible: Ansible, name: str, *tasks: dict[str, Any]) -> Path:
    return ansible.write(
        f"{name}.yml",
        [
            {
                "name": name,
                "hosts": "localhost",
                "connection": "local",
                "gather_facts": False,
                "tasks": list(tasks),
            }
        ],
    )


def task(module: str, **args: Any) -> dict[str, Any]:
    return {"name": module, f"netmigrate.core.{module}": args}


def run(ansible: Ansible, book: Path, *args: str) -> AnsibleRun:
    return ansible.playbook(book, "localhost,", *args)


def assert_ok(result: AnsibleRun, changed: int) -> None:
    assert result.returncode == 0, result.text()
    assert result.recap()["localhost"]["changed"] == changed, result.text()


def assert_failed(result: AnsibleRun, *messages: str) -> None:
    assert result.returncode == 2, result.text()
    assert result.recap()["localhost"]["failed"] == 1, result.text()
    for m in messages:
        assert m in result.stdout, result.text()


# ---------------------------------------------------------------------------------- pipeline


def test_pipeline_check_install_idempotent_and_verified(
    ansible: Ansible, switch: SwitchProcess, device_config: Path
) -> None:
    args = dict(address=switch.address, p4info=str(p4info_path()), device_config=str(device_config))
    book = play(ansible, "pipeline", task("p4_pipeline", **args))
    cookie = PipelineConfig.load(p4info_path(), DEVICE_CONFIG).cookie

    checked = run(ansible, book, "--check", "--diff")
    assert_ok(checked, changed=1)
    assert f'+    "cookie": {cookie}' in checked.stdout
    assert on_switch(switch.address, current_cookie) is None  # VERIFY only

    assert_ok(run(ansible, book), changed=1)
    assert on_switch(switch.address, current_cookie) == cookie
    assert_ok(run(ansible, book), changed=0)
    assert_ok(run(ansible, book, "--check"), changed=0)

    verified = play(ansible, "verified", task("p4_pipeline", state="verified", **args))
    assert_ok(run(ansible, verified), changed=0)
    # Another device config makes another cookie: verified fails, present would change.
    device_config.write_bytes(b"another device config")
    assert_failed(run(ansible, verified), "does not run this pipeline", f"it has cookie {cookie}")
    assert on_switch(switch.address, current_cookie) == cookie


def test_pipeline_failures_are_clear_and_change_nothing(
    ansible: Ansible, switch: SwitchProcess, device_config: Path, tmp_path: Path
) -> None:
    cookie = install(switch.address)
    on_switch(switch.address, lambda s: _insert_keyspace(s))

    missing = play(
        ansible,
        "missing",
        task("p4_pipeline", address=switch.address, p4info=str(tmp_path / "nope.txtpb")),
    )
    assert_failed(run(ansible, missing), f"cannot read p4info {tmp_path / 'nope.txtpb'}")

    # The NetMigrate P4Info with a register of the wrong size: the switch refuses it.
    info = load_p4info(p4info_path())
    info.registers[0].size = 1024
    wrong = tmp_path / "wrong.p4info.txtpb"
    wrong.write_text(str(info))
    mismatched = play(
        ansible,
        "mismatched",
        task(
            "p4_pipeline",
            address=switch.address,
            p4info=str(wrong),
            device_config=str(device_config),
        ),
    )
    expected = "registers['NetMigrateIngress.slot_map'].size is 1024, expected 65536"
    for args in (["--check"], []):
        assert_failed(run(ansible, mismatched, *args), "INVALID_ARGUMENT", expected)

    unreachable = play(
        ansible,
        "unreachable",
        task("p4_pipeline", address="127.0.0.1:1", p4info=str(p4info_path()), timeout=3),
    )
    assert_failed(
        run(ansible, unreachable), "UNAVAILABLE", "no P4Runtime server answers at 127.0.0.1:1"
    )

    # Nothing changed: same pipeline, its entry still there (a commit would have cleared it).
    assert on_switch(switch.address, current_cookie) == cookie
    assert len(entries_on(switch.address, ["NetMigrateIngress.keyspace"])) == 1


async def _insert_keyspace(s: P4RTSession) -> None:
    from netmigrate.p4rt import TableEntrySpec, ensure_table_entries

    e = KEYSPACE_ENTRY
    spec = TableEntrySpec(e["table"], e["match"], e["action"], e["params"])
    await ensure_table_entries(s, [spec])


# ------------------------------------------------------------------------------ table entries

SERVER_ENTRIES = [
    {
        "table": "NetMigrateIngress.server_port",
        "match": {"meta.dest_server": "{{ server_id }}"},  # a templated value (a string)
        "action": "NetMigrateIngress.set_server_port",
        "params": {"port": 1},
    },
    {
        "table": "NetMigrateIngress.ipv4_lpm",
        "match": {"hdr.ipv4.dstAddr": "10.9.0.0/24"},
        "action": "NetMigrateIngress.ipv4_forward",
        "params": {"dst_mac": "02:00:00:00:09:01", "port": 1},
    },
    {
        "table": "NetMigrateEgress.server_rewrite",
        "match": {"meta.egress_server": 1},
        "action": "NetMigrateEgress.rewrite_to_server",
        "params": {"dst_mac": "02:00:00:00:09:01", "dst_ip": "10.9.0.1", "udp_port": 50001},
    },
]


def entries_task(address: str, entries: list[dict[str, Any]], **args: Any) -> dict[str, Any]:
    t = task("p4_table_entry", address=address, entries=entries, **args)
    t["vars"] = {"server_id": 1}
    return t


def test_table_entries_check_present_idempotent_absent(
    ansible: Ansible, switch: SwitchProcess
) -> None:
    install(switch.address)
    book = play(ansible, "entries", entries_task(switch.address, SERVER_ENTRIES))

    checked = run(ansible, book, "--check", "--diff")
    assert_ok(checked, changed=1)
    assert '"dst_mac": 2199023257857' in checked.stdout  # the diff, values as integers
    assert entries_on(switch.address) == []

    assert_ok(run(ansible, book), changed=1)
    have = entries_on(switch.address)
    assert {
        "table": "NetMigrateEgress.server_rewrite",
        "match": {"meta.egress_server": 1},
        "action": "NetMigrateEgress.rewrite_to_server",
        "params": {"dst_mac": 0x020000000901, "dst_ip": 0x0A090001, "udp_port": 50001},
    } in have
    assert len(have) == 3
    assert_ok(run(ansible, book, "--diff"), changed=0)

    # Another port for server 1 is a modification with a before/after diff.
    moved = [dict(SERVER_ENTRIES[0], params={"port": 2}), *SERVER_ENTRIES[1:]]
    modify = play(ansible, "modify", entries_task(switch.address, moved))
    modified = run(ansible, modify, "--diff")
    assert_ok(modified, changed=1)
    assert '-                "port": 1' in modified.stdout
    assert '+                "port": 2' in modified.stdout
    assert_ok(run(ansible, modify), changed=0)

    absent = play(
        ansible,
        "absent",
        entries_task(
            switch.address,
            [{"table": "NetMigrateIngress.server_port", "match": {"meta.dest_server": 1}}],
            state="absent",
        ),
    )
    assert_ok(run(ansible, absent, "--check"), changed=1)
    assert len(entries_on(switch.address)) == 3
    assert_ok(run(ansible, absent), changed=1)
    assert_ok(run(ansible, absent), changed=0)
    assert len(entries_on(switch.address, ["NetMigrateIngress.server_port"])) == 0


def test_table_entries_purge_and_bad_entry(ansible: Ansible, switch: SwitchProcess) -> None:
    install(switch.address)
    assert_ok(run(ansible, play(ansible, "e", entries_task(switch.address, SERVER_ENTRIES))), 1)

    keep = [SERVER_ENTRIES[1]]
    purge = play(ansible, "purge", entries_task(switch.address, keep, purge=True))
    # Purge only touches the named table (ipv4_lpm): nothing to delete there.
    assert_ok(run(ansible, purge), changed=0)
    other = dict(SERVER_ENTRIES[1], match={"hdr.ipv4.dstAddr": "10.8.0.0/16"})
    purge2 = play(ansible, "purge2", entries_task(switch.address, [other], purge=True))
    assert_ok(run(ansible, purge2, "--check"), changed=1)
    assert len(entries_on(switch.address, ["NetMigrateIngress.ipv4_lpm"])) == 1
    assert_ok(run(ansible, purge2), changed=1)
    lpm = entries_on(switch.address, ["NetMigrateIngress.ipv4_lpm"])
    assert [e["match"] for e in lpm] == [{"hdr.ipv4.dstAddr": [0x0A080000, 16]}]
    assert len(entries_on(switch.address)) == 3  # the other tables untouched

    before = entries_on(switch.address)
    bad = [SERVER_ENTRIES[0], {**SERVER_ENTRIES[2], "params": {"dst_mac": "not-a-mac"}}]
    assert_failed(
        run(ansible, play(ansible, "bad", entries_task(switch.address, bad))),
        "INVALID_ARGUMENT",
        "NetMigrateEgress.server_rewrite",
    )
    unknown = [{"table": "no_such_table", "match": {"x": 1}, "action": "a"}]
    assert_failed(
        run(ansible, play(ansible, "unknown", entries_task(switch.address, unknown))),
        "no_such_table",
    )
    assert entries_on(switch.address) == before


# ----------------------------------------------------------------------------- clone sessions


def test_clone_sessions(ansible: Ansible, switch: SwitchProcess) -> None:
    install(switch.address)
    sessions = [
        {"session_id": 1, "replicas": [{"port": 1}]},
        {"session_id": 2, "replicas": [{"port": 2}, {"port": 3, "instance": 1}]},
    ]
    book = play(
        ansible, "clones", task("p4_clone_session", address=switch.address, sessions=sessions)
    )

    def have() -> dict[int, Any]:
        async def read(s: P4RTSession) -> dict[int, Any]:
            out = await read_clone_sessions(s)
            return {k: sorted((_port(r), r.instance) for r in v.replicas) for k, v in out.items()}

        return on_switch(switch.address, read)

    assert_ok(run(ansible, book, "--check"), changed=1)
    assert have() == {}
    assert_ok(run(ansible, book), changed=1)
    assert have() == {1: [(1, 0)], 2: [(2, 0), (3, 1)]}
    assert_ok(run(ansible, book), changed=0)

    moved = play(
        ansible,
        "moved",
        task(
            "p4_clone_session",
            address=switch.address,
            sessions=[{"session_id": 1, "replicas": [{"port": 4}]}],
        ),
    )
    diff = run(ansible, moved, "--diff")
    assert_ok(diff, changed=1)
    assert have()[1] == [(4, 0)]
    absent = play(
        ansible,
        "absent",
        task(
            "p4_clone_session", address=switch.address, state="absent", sessions=[{"session_id": 2}]
        ),
    )
    assert_ok(run(ansible, absent), changed=1)
    assert_ok(run(ansible, absent), changed=0)
    assert have() == {1: [(4, 0)]}


def _port(r: p4r.Replica) -> int:
    return int.from_bytes(r.port, "big") if r.WhichOneof("port_kind") == "port" else r.egress_port


# ------------------------------------------------------------------------------ info modules


def test_p4_info_reports_tables_and_counters(ansible: Ansible, switch: SwitchProcess) -> None:
    cookie = install(switch.address)
    assert_ok(run(ansible, play(ansible, "e", entries_task(switch.address, SERVER_ENTRIES))), 1)
    book = play(
        ansible,
        "info",
        {
            **task(
                "p4_info",
                address=switch.address,
                tables=["server_port", "NetMigrateIngress.ipv4_lpm"],
                include_entries=True,
                counters=[{"name": "decision_counter", "indices": [0, 1]}],
            ),
            "register": "info",
        },
        {
            "name": "Check the facts",
            "ansible.builtin.assert": {
                "that": [
                    f"info.cookie == {cookie}",
                    "info.tables | map(attribute='name') | list == "
                    "['NetMigrateIngress.ipv4_lpm', 'NetMigrateIngress.server_port']"
                    " or info.tables | map(attribute='name') | list == "
                    "['NetMigrateIngress.server_port', 'NetMigrateIngress.ipv4_lpm']",
                    "info.tables | map(attribute='entry_count') | list == [1, 1]",
                    "(info.tables | selectattr('name', 'eq', 'NetMigrateIngress.server_port')"
                    " | first).entries[0].params.port == 1",
                    "info.counters.decision_counter | map(attribute='index') | list == [0, 1]",
                    "info.counters.decision_counter[0].packets == 0",
                ]
            },
        },
    )
    assert_ok(run(ansible, book), changed=0)
    assert_ok(run(ansible, book, "--check"), changed=0)
    unknown = play(ansible, "unknown", task("p4_info", address=switch.address, tables=["nope"]))
    assert_failed(run(ansible, unknown), "NOT_FOUND", "no P4Table named 'nope'")


# ---------------------------------------------------------------------------------- slot map


def slot_args(address: str, **args: Any) -> dict[str, Any]:
    return dict(
        address=address,
        keyspace_id=1,
        service_address=SERVICE_IP,
        service_port=SERVICE_PORT,
        **args,
    )


def test_slot_map_reconcile_writes_then_is_idempotent(
    ansible: Ansible, switch: SwitchProcess
) -> None:
    install(switch.address)
    on_switch(switch.address, _insert_keyspace)
    ks = Keyspace(1, SERVICE_IP, SERVICE_PORT)
    slots = [0, 99, 100, 101, 16383]

    def have() -> dict[int, SlotEntry]:
        return on_switch(switch.address, lambda s: read_slot_map(s, ks, slots))

    ranges = [
        {"first": 0, "last": 99, "owner": 2},
        {"first": 100, "owner": 3, "target": 2},
    ]
    book = play(
        ansible,
        "slots",
        task("slot_map", **slot_args(switch.address, state="present", ranges=ranges)),
    )

    checked = run(ansible, book, "--check", "--diff")
    assert_ok(checked, changed=1)
    assert set(have().values()) == {SlotEntry(0, 0)}

    first = run(ansible, book, "--diff", "-v")
    assert_ok(first, changed=1)
    assert '"changed_slots": 101' in first.stdout
    assert have() == {
        0: SlotEntry(2, 0),
        99: SlotEntry(2, 0),
        100: SlotEntry(3, 2),
        101: SlotEntry(0, 0),
        16383: SlotEntry(0, 0),
    }
    assert_ok(run(ansible, book), changed=0)

    # The same slots through p4_register_info: SLOT_READ and raw RegisterEntry cells agree.
    info = play(
        ansible,
        "registers",
        {
            **task(
                "p4_register_info",
                address=switch.address,
                register="slot_map",
                indices=[99, 100],
                keyspace={"id": 1, "service_address": SERVICE_IP, "service_port": SERVICE_PORT},
            ),
            "register": "slots",
        },
        {
            **task(
                "p4_register_info",
                address=switch.address,
                register="NetMigrateIngress.slot_map",
                indices=[99, 100],
            ),
            "register": "cells",
        },
        {
            "name": "Both reads agree",
            "ansible.builtin.assert": {
                "that": [
                    "slots['values'] == [{'index': 99, 'owner': 2, 'target': 0},"
                    " {'index': 100, 'owner': 3, 'target': 2}]",
                    "cells['values'] | map(attribute='index') | list == [99, 100]",
                    "cells['values'][0].value != cells['values'][1].value",
                    "cells['values'][0].value > 0",
                ]
            },
        },
    )
    assert_ok(run(ansible, info), changed=0)

    # Purge resets every other slot (and the read state reports the whole map compressed).
    purge = play(
        ansible,
        "purge",
        task(
            "slot_map", **slot_args(switch.address, state="present", purge=True, ranges=[ranges[1]])
        ),
    )
    assert_ok(run(ansible, purge), changed=1)
    assert have()[0] == SlotEntry(0, 0) and have()[100] == SlotEntry(3, 2)
    read = play(
        ansible,
        "read",
        {**task("slot_map", **slot_args(switch.address)), "register": "map"},
        {
            "name": "The whole map in three ranges",
            "ansible.builtin.assert": {
                "that": [
                    "map.ranges == [{'first': 0, 'last': 99, 'owner': 0, 'target': 0},"
                    " {'first': 100, 'last': 100, 'owner': 3, 'target': 2},"
                    " {'first': 101, 'last': 16383, 'owner': 0, 'target': 0}]"
                ]
            },
        },
    )
    assert_ok(run(ansible, read), changed=0)


def test_slot_map_bad_input_and_missing_keyspace(ansible: Ansible, switch: SwitchProcess) -> None:
    install(switch.address)
    overlap = play(
        ansible,
        "overlap",
        task(
            "slot_map",
            **slot_args(
                switch.address,
                state="present",
                ranges=[{"first": 0, "last": 10, "owner": 1}, {"first": 10, "owner": 2}],
            ),
        ),
    )
    assert_failed(run(ansible, overlap), "slot 10 is in more than one range")
    # No keyspace entry on the switch: SLOT_READ gets no answer, the task says why.
    nokeyspace = play(
        ansible,
        "nokeyspace",
        task(
            "slot_map",
            **slot_args(switch.address, state="present", ranges=[{"first": 5, "owner": 1}]),
        ),
    )
    assert_failed(run(ansible, nokeyspace), "DEADLINE_EXCEEDED", "is the keyspace entry")


# ------------------------------------------------------------ slot map from the agents' state


@dataclass
class AgentProcess:
    server_id: int
    control: str
    proc: subprocess.Popen[str]


def start_agent(redis_port: int, server_id: int, slots: str, log: Path) -> AgentProcess:
    """``netmigrate agent`` for keyspace 1 on free ports; READY line parsed for the addresses."""
    with log.open("a") as err:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "netmigrate.cli", "agent",
                "--redis", f"redis://127.0.0.1:{redis_port}",
                "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0",
                "--keyspace", "1", "--server-id", str(server_id), "--slots", slots,
                "--no-uvloop",
            ],
            stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
    agent = AgentProcess(server_id, "", proc)
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    line = proc.stdout.readline() if ready else ""  # type: ignore[union-attr]
    if not line.startswith("READY"):
        stop_agent(agent)
        raise RuntimeError(f"agent {server_id} did not start: {line!r}\n{log.read_text()}")
    fields = dict(item.split("=", 1) for item in line.split()[1:])
    agent.control = f"127.0.0.1:{fields['control']}"
    return agent


def stop_agent(agent: AgentProcess) -> None:
    if agent.proc.poll() is None:
        agent.proc.terminate()
        try:
            agent.proc.wait(10)
        except subprocess.TimeoutExpired:
            agent.proc.kill()
            agent.proc.wait(10)
    if agent.proc.stdout is not None:
        agent.proc.stdout.close()


def own_all_slots(server: RedisServer, timeout: float = 15.0) -> None:
    """Make the Redis a one-node cluster owning every slot (what an agent runs on)."""
    client = redis.Redis(port=server.port, decode_responses=True)
    try:
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        deadline = time.monotonic() + timeout
        while client.cluster("INFO")["cluster_state"] != "ok":
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis {server.address}: cluster_state not ok")
            time.sleep(0.05)
    finally:
        client.close()


@pytest.fixture
def two_agents(tmp_path: Path) -> Iterator[list[AgentProcess]]:
    """Agents 1 (slots 0-8191) and 2 (8192-16383) of keyspace 1, each on its own Redis."""
    servers: list[RedisServer] = []
    agents: list[AgentProcess] = []
    try:
        for server_id, slots in ((1, "0-8191"), (2, "8192-16383")):
            server = asyncio.run(start_redis(cluster=True))
            servers.append(server)
            own_all_slots(server)
            agents.append(
                start_agent(server.port, server_id, slots, tmp_path / f"a{server_id}.log")
            )
        yield agents
    finally:
        for agent in agents:
            stop_agent(agent)
        for server in servers:
            server.stop()


def test_slot_map_reconciles_with_the_agents(
    ansible: Ansible, switch: SwitchProcess, two_agents: list[AgentProcess]
) -> None:
    install(switch.address)
    entries, clones = netmigrate_entries(lab_servers([1, 2]), keyspace_id=1, default_owner=1)

    async def provision(s: P4RTSession) -> None:
        await ensure_table_entries(s, entries)
        await ensure_clone_sessions(s, clones)

    on_switch(switch.address, provision)
    ks = Keyspace(1, SERVICE_IP, SERVICE_PORT)
    probe = [0, 8191, 8192, 16383]

    def have() -> dict[int, SlotEntry]:
        return on_switch(switch.address, lambda s: read_slot_map(s, ks, probe))

    agents = [{"server_id": a.server_id, "control": a.control} for a in two_agents]
    book = play(
        ansible,
        "reconcile",
        {**task("slot_map", **slot_args(switch.address, state="present", agents=agents)),
         "register": "reconciled"},
        {
            "name": "The second agent's half was (would be) written",
            "ansible.builtin.assert": {
                "that": [
                    "not reconciled.changed or reconciled.changed_ranges[0].first == 8192",
                    "not reconciled.changed or"
                    " reconciled.changed_ranges[0].after == {'owner': 2, 'target': 0}",
                    "reconciled.reconcile.slots_checked == 16384",
                    "reconciled.reconcile.conflicts == {}",
                ]
            },
        },
    )  # fmt: skip

    assert_ok(run(ansible, book, "--check", "--diff"), changed=1)
    assert set(have().values()) == {SlotEntry(0, 0)}

    first = run(ansible, book, "-v")
    assert_ok(first, changed=1)
    assert "changed 8192 of 16384 slots" in first.stdout
    # Agent 1's half already resolves to it (owner 0 = the default owner 1): left alone.
    assert have() == {0: SlotEntry(0, 0), 8191: SlotEntry(0, 0), 8192: SlotEntry(2, 0),
                      16383: SlotEntry(2, 0)}  # fmt: skip
    assert_ok(run(ansible, book), changed=0)

    unreachable = play(
        ansible,
        "unreachable_agent",
        task(
            "slot_map",
            **slot_args(
                switch.address,
                state="present",
                agents=[*agents, {"server_id": 3, "control": "127.0.0.1:1"}],
            ),
        ),
    )
    assert_failed(run(ansible, unreachable), "reconcile:", "127.0.0.1:1")
