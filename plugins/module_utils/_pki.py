# Copyright (c) NetMigrate developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A small PKI for the agents' control service: one CA and its leaf certificates, in one
directory, made idempotently (the logic of ``netmigrate.core.control_pki``).

Private to this collection. Files: ``ca.pem`` / ``ca.key`` and ``NAME.pem`` / ``NAME.key``;
keys are EC P-256, written mode 0600 and never returned. A leaf is made again only when it is
missing, unreadable, not issued by the current CA, does not match its key, names other
addresses or usages than wanted, or expires within ``renew_days``; a new CA makes every leaf
new. Concurrent callers (one task per agent host, all delegated to the controller) take turns
on a lock file, so exactly one of them makes the CA.
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
import os
import traceback
import typing as t
from dataclasses import dataclass

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    CRYPTOGRAPHY_ERROR: str | None = None
except ImportError:
    CRYPTOGRAPHY_ERROR = traceback.format_exc()

CA_NAME = "ca"
_USAGES = {"server": "SERVER_AUTH", "client": "CLIENT_AUTH"}


@dataclass(frozen=True)
class LeafSpec:
    name: str
    common_name: str
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    usages: tuple[str, ...] = ("server", "client")

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith(".") or self.name == CA_NAME:
            raise ValueError(f"invalid certificate name {self.name!r}")
        for ip in self.ip_addresses:
            ipaddress.ip_address(ip)  # ValueError names the bad address
        unknown = set(self.usages) - set(_USAGES)
        if unknown or not self.usages:
            raise ValueError(f"certificate {self.name}: usages must be server and/or client")


@dataclass(frozen=True)
class PkiResult:
    ca_cert: str
    ca_changed: bool
    #: name -> (cert path, key path, changed, why it changed or "")
    leaves: dict[str, tuple[str, str, bool, str]]

    @property
    def changed(self) -> bool:
        return self.ca_changed or any(leaf[2] for leaf in self.leaves.values())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017 (modules run on older Pythons too)


def _name(cn: str) -> t.Any:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: str, data: bytes, mode: int) -> None:
    """Atomically, created with ``mode`` (a key is never readable by others, not even briefly)."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _load(cert_path: str, key_path: str) -> tuple[t.Any, t.Any] | None:
    try:
        with open(cert_path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        with open(key_path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    return cert, key


def _same_key(cert: t.Any, key: t.Any) -> bool:
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    return cert.public_key().public_bytes(enc, pub) == key.public_key().public_bytes(enc, pub)


def _not_after(cert: t.Any) -> datetime.datetime:
    return cert.not_valid_after_utc


def _issue(
    subject: str,
    key: t.Any,
    issuer_cert: t.Any,
    issuer_key: t.Any,
    days: int,
    spec: LeafSpec | None,
) -> t.Any:
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_cert.subject if issuer_cert is not None else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=spec is None, path_length=None), critical=True)
    )
    if spec is None:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    else:
        eku = [getattr(ExtendedKeyUsageOID, _USAGES[u]) for u in spec.usages]
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        alt = [x509.DNSName(n) for n in spec.dns_names]
        alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in spec.ip_addresses]
        if alt:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return builder.sign(issuer_key if issuer_key is not None else key, hashes.SHA256())


def _leaf_problem(cert: t.Any, key: t.Any, ca: t.Any, spec: LeafSpec, renew: int) -> str:
    """Why an existing leaf must be made again ("" when it is fine)."""
    if not _same_key(cert, key):
        return "does not match its key"
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # signature, issuer name or algorithm: not the current CA's
        return "not issued by the current CA"
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        have = (
            sorted(alt.get_values_for_type(x509.DNSName)),
            sorted(str(a) for a in alt.get_values_for_type(x509.IPAddress)),
        )
    except x509.ExtensionNotFound:
        have = ([], [])
    want = (
        sorted(spec.dns_names),
        sorted(str(ipaddress.ip_address(a)) for a in spec.ip_addresses),
    )
    if have != want:
        return "names other addresses"
    try:
        eku = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        eku = set()
    if eku != {getattr(ExtendedKeyUsageOID, _USAGES[u]) for u in spec.usages}:
        return "has other usages"
    if cert.subject != _name(spec.common_name):
        return "has another subject"
    if _not_after(cert) - _now() < datetime.timedelta(days=renew):
        return "expires soon"
    return ""


def _pem_key(key: t.Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: t.Any) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def ensure_pki(
    directory: str,
    ca_common_name: str,
    leaves: t.Sequence[LeafSpec],
    *,
    days: int = 825,
    ca_days: int = 3650,
    renew_days: int = 30,
    check: bool = False,
) -> PkiResult:
    """Make ``directory`` hold a valid CA and every leaf of ``leaves``; in ``check`` mode only
    say what would change."""
    paths = {s.name: (f"{directory}/{s.name}.pem", f"{directory}/{s.name}.key") for s in leaves}
    ca_paths = (f"{directory}/{CA_NAME}.pem", f"{directory}/{CA_NAME}.key")
    if not os.path.isdir(directory):
        if check:
            return PkiResult(
                ca_paths[0], True, {n: (*p, True, "missing") for n, p in paths.items()}
            )
        os.makedirs(directory, mode=0o700, exist_ok=True)
    with open(f"{directory}/.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        loaded = _load(*ca_paths)
        ca_changed = (
            loaded is None
            or not _same_key(*loaded)
            or loaded[0].subject != _name(ca_common_name)
            or _not_after(loaded[0]) - _now() < datetime.timedelta(days=renew_days)
        )
        if ca_changed and not check:
            ca_key = ec.generate_private_key(ec.SECP256R1())
            ca_cert = _issue(ca_common_name, ca_key, None, None, ca_days, None)
            _write(ca_paths[1], _pem_key(ca_key), 0o600)
            _write(ca_paths[0], _pem_cert(ca_cert), 0o644)
        elif not ca_changed:
            ca_cert, ca_key = loaded  # type: ignore[misc]
        out: dict[str, tuple[str, str, bool, str]] = {}
        for spec in leaves:
            cert_path, key_path = paths[spec.name]
            existing = _load(cert_path, key_path)
            if existing is None:
                why = "missing"
            elif ca_changed:
                why = "the CA is new"
            else:
                why = _leaf_problem(*existing, ca_cert, spec, renew_days)
            if why and not check:
                key = ec.generate_private_key(ec.SECP256R1())
                cert = _issue(spec.common_name, key, ca_cert, ca_key, days, spec)
                _write(key_path, _pem_key(key), 0o600)
                _write(cert_path, _pem_cert(cert), 0o644)
            out[spec.name] = (cert_path, key_path, bool(why), why)
        return PkiResult(ca_paths[0], ca_changed, out)
