"""TLS for the P4Runtime port: server certificate and key, optional client CA (mTLS).

The key is read from its file and handed to gRPC; it is never logged or kept elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


class TlsError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: Path
    key: Path
    #: Clients must present a certificate signed by this CA (mutual TLS) when set.
    client_ca: Path | None = None


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsError(f"cannot read the TLS {what} {path}: {exc.strerror}") from None
    if b"-----BEGIN" not in data:
        raise TlsError(f"the TLS {what} {path} is not PEM")
    return data


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    cert = _read(files.cert, "certificate")
    key = _read(files.key, "key")
    ca = _read(files.client_ca, "client CA") if files.client_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )
