"""The agent's gRPC control service, plain and over (mutual) TLS, and `netmigrate agent-stats`."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import json
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from netmigrate._generated.agent.v1 import control_pb2, control_pb2_grpc
from netmigrate.agent import stats_cli
from netmigrate.agent.config import TlsFiles
from netmigrate.client import AsyncClient, ServerError
from netmigrate.protocol.constants import Status


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key, issuer: str, issuer_key, *, ca: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """A throw-away CA with a server and a client certificate, as PEM files."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test-ca", ca_key, "test-ca", ca_key, ca=True)
    files: dict[str, Path] = {"ca": tmp_path / "ca.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for who in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(who, key, "test-ca", ca_key)
        files[f"{who}_cert"] = tmp_path / f"{who}.pem"
        files[f"{who}_key"] = tmp_path / f"{who}.key"
        files[f"{who}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{who}_key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return files


async def test_get_stats_and_slots(cluster_redis, agent_factory) -> None:
    agent = await agent_factory(
        cluster_redis, control=("127.0.0.1", 0), initial_slots=frozenset(range(0, 16384, 2))
    )
    refused = 0
    async with AsyncClient(agent.address, 50000, timeout=0.5, retries=0) as client:
        for i in range(20):
            try:
                await client.set(f"k{i}", "v")
            except ServerError as e:
                assert e.status == Status.WRONG_OWNER
                refused += 1
    async with grpc.aio.insecure_channel(f"127.0.0.1:{agent.control_port}") as channel:
        stub = control_pb2_grpc.AgentControlStub(channel)
        stats = await stub.GetStats(control_pb2.GetStatsRequest(), timeout=5)
        slots = await stub.GetSlots(control_pb2.GetSlotsRequest(), timeout=5)
    snap = agent.stats.snapshot()
    assert stats.requests["SET"] == 20
    assert stats.replies["OK"] == snap.replies["OK"] > 0
    assert stats.replies["WRONG_OWNER"] == snap.replies["WRONG_OWNER"] == refused > 0
    assert stats.replies["OK"] + stats.replies["WRONG_OWNER"] == 20
    assert stats.counters["datagrams"] == 20
    assert stats.counters["dedup_entries"] == stats.replies["OK"]
    assert stats.agent.keyspace == 50000 and stats.agent.server_id == 1
    assert stats.agent.listen == f"127.0.0.1:{agent.address[1]}"
    assert slots.owned_count == 8192
    assert (slots.owned[0].start, slots.owned[0].end) == (0, 0)
    assert (slots.owned[-1].start, slots.owned[-1].end) == (16382, 16382)


def _cli_args(**kw: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    stats_cli.add_arguments(parser)
    argv = []
    for k, v in kw.items():
        flag = "--" + k.replace("_", "-")
        argv += [flag] if v is True else [flag, str(v)]
    return parser.parse_args(argv)


async def test_agent_stats_command(cluster_redis, agent_factory, capsys) -> None:
    agent = await agent_factory(cluster_redis, control=("127.0.0.1", 0))
    async with AsyncClient(agent.address, 50000) as client:
        await client.set("a", "1")
        await client.get("a")
        await client.get("missing")
    control = f"127.0.0.1:{agent.control_port}"
    loop = asyncio.get_running_loop()
    # The command blocks; run it in a thread so that the agent keeps serving on this loop.
    assert await loop.run_in_executor(None, stats_cli.run, _cli_args(control=control)) == 0
    out = capsys.readouterr().out
    assert "keyspace 50000 server 1" in out
    assert "slots owned: 16384 (0-16383)" in out
    lines = {
        line.split()[0]: line.split()[-1] for line in out.splitlines() if line.startswith("  ")
    }
    assert lines["GET"] == "2" and lines["SET"] == "1" and lines["NOT_FOUND"] == "1"
    assert (
        await loop.run_in_executor(None, stats_cli.run, _cli_args(control=control, json=True)) == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["stats"]["requests"]["GET"] == "2"  # proto3 JSON writes uint64 as strings
    assert data["slots"]["ownedCount"] == 16384
    # Nobody listening: a clear error, not a traceback.
    await agent.stop()
    args = _cli_args(control=control, timeout=1)
    assert await loop.run_in_executor(None, stats_cli.run, args) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


async def test_control_over_mutual_tls(cluster_redis, agent_factory, pki) -> None:
    tls = TlsFiles(cert=pki["server_cert"], key=pki["server_key"], client_ca=pki["ca"])
    agent = await agent_factory(cluster_redis, control=("127.0.0.1", 0), control_tls=tls)
    target = f"127.0.0.1:{agent.control_port}"

    async def get_slots(credentials: grpc.ChannelCredentials | None) -> int:
        channel = (
            grpc.aio.secure_channel(target, credentials)
            if credentials
            else grpc.aio.insecure_channel(target)
        )
        async with channel:
            stub = control_pb2_grpc.AgentControlStub(channel)
            reply = await stub.GetSlots(control_pb2.GetSlotsRequest(), timeout=3)
            return reply.owned_count

    ca = pki["ca"].read_bytes()
    good = grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=pki["client_key"].read_bytes(),
        certificate_chain=pki["client_cert"].read_bytes(),
    )
    assert await get_slots(good) == 16384
    for bad in (None, grpc.ssl_channel_credentials(root_certificates=ca)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await get_slots(bad)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE

    loop = asyncio.get_running_loop()
    args = _cli_args(
        control=target,
        tls_ca=pki["ca"],
        tls_cert=pki["client_cert"],
        tls_key=pki["client_key"],
        json=True,
    )
    assert await loop.run_in_executor(None, stats_cli.run, args) == 0
