"""A migration with mutual TLS everywhere: controller -> agents and agent -> agent (ids, copy
stream, pulls). An agent without the client certificate is refused."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from migration_helpers import SOURCE, TARGET, keys_in

from netmigrate import migration
from netmigrate.agent.config import TlsFiles
from netmigrate.migration import AgentEndpoint, ControlTls, MigrationError, MigrationOptions


def _pem_pair(tmp: Path, name: str, issuer_key, issuer: str, *, ca: bool = False):  # type: ignore[no-untyped-def]
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    cert_path, key_path = tmp / f"{name}.pem", tmp / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return key, cert_path, key_path


async def test_migration_over_mutual_tls(pair, tmp_path: Path) -> None:
    ca_key, ca, _ = _pem_pair(tmp_path, "ca", None, "ca", ca=True)
    _, agent_cert, agent_key = _pem_pair(tmp_path, "agent", ca_key, "ca")
    _, ctl_cert, ctl_key = _pem_pair(tmp_path, "controller", ca_key, "ca")
    tls = {
        "control_tls": TlsFiles(agent_cert, agent_key, client_ca=ca),
        "peer_tls": ControlTls(ca, agent_cert, agent_key),
    }
    p = await pair(target_kw=tls, **tls)
    ra, rb = p.redis_a.client(), p.redis_b.client()
    for k in keys_in(42, 25):
        ra.set(k, b"secret")
    client_tls = ControlTls(ca, ctl_cert, ctl_key)
    source = AgentEndpoint(SOURCE, p.source_ep.control, tls=client_tls)
    target = AgentEndpoint(TARGET, p.target_ep.control, tls=client_tls)

    # Without a client certificate the agents refuse the controller.
    bare = AgentEndpoint(SOURCE, p.source_ep.control, tls=ControlTls(ca))
    with pytest.raises(MigrationError) as info:
        await migration.status(bare)
    assert info.value.code == "UNAVAILABLE"

    result = await migration.run(
        source, target, [42], keyspace=p.keyspace, options=MigrationOptions(grace=0)
    )
    assert result.state == "FINALIZED" and result.keys_copied == 25
    assert all(rb.get(k) == b"secret" for k in keys_in(42, 25))
