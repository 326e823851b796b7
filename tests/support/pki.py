"""A throwaway PKI for TLS tests: a CA, a server certificate, client certificates, and a
client certificate from a CA nobody trusts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LabPki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    #: A client certificate from a CA the switch does not trust.
    rogue_cert: Path
    rogue_key: Path


def make_pki(directory: Path, server_names: Sequence[str] = ("127.0.0.1", "localhost")) -> LabPki:
    """A CA, a server certificate for ``server_names`` and client certificates (EC P-256)."""
    import datetime
    import ipaddress as ipa

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key, path: Path) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)

    def ca(cn: str):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def leaf(ca_key, ca_cert, cn: str, usage, sans=()):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            alt = []
            for s in sans:
                try:
                    alt.append(x509.IPAddress(ipa.ip_address(s)))
                except ValueError:
                    alt.append(x509.DNSName(s))
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    pem = serialization.Encoding.PEM
    ca_key, ca_cert = ca("netmigrate test CA")
    rogue_ca_key, rogue_ca_cert = ca("rogue CA")
    s_key, s_cert = leaf(
        ca_key, ca_cert, "lab switch", ExtendedKeyUsageOID.SERVER_AUTH, server_names
    )
    c_key, c_cert = leaf(ca_key, ca_cert, "controller", ExtendedKeyUsageOID.CLIENT_AUTH)
    r_key, r_cert = leaf(rogue_ca_key, rogue_ca_cert, "rogue", ExtendedKeyUsageOID.CLIENT_AUTH)
    pki = LabPki(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        rogue_cert=directory / "rogue.pem",
        rogue_key=directory / "rogue.key",
    )
    pki.ca.write_bytes(ca_cert.public_bytes(pem))
    pki.server_cert.write_bytes(s_cert.public_bytes(pem))
    write_key(s_key, pki.server_key)
    pki.client_cert.write_bytes(c_cert.public_bytes(pem))
    write_key(c_key, pki.client_key)
    pki.rogue_cert.write_bytes(r_cert.public_bytes(pem))
    write_key(r_key, pki.rogue_key)
    return pki
