"""The gateway's own users: who may connect, checked like Redis' ``AUTH`` / ``HELLO AUTH``.

Passwords are kept only as SHA-256 digests (as Redis' ``ACL SETUSER ... #<hash>`` does) and are
compared in constant time; no password ever appears in a log line or an error. A gateway with
no users file refuses to start unless it is told ``--no-auth`` (then every connection is the
``default`` user, as a Redis without ``requirepass``).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path


class AclError(ValueError):
    pass


@dataclass(frozen=True)
class Acl:
    #: user name -> SHA-256 hex digest of its password
    users: dict[str, str]
    open: bool = False

    @classmethod
    def no_auth(cls) -> Acl:
        return cls({}, open=True)

    @classmethod
    def from_file(cls, path: Path) -> Acl:
        """Lines ``user NAME #SHA256HEX`` (the form ``ACL GETUSER`` shows); ``#`` comments."""
        users: dict[str, str] = {}
        for n, raw in enumerate(path.read_text().splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 3 or parts[0] != "user" or not parts[2].startswith("#"):
                raise AclError(f"{path}:{n}: expected 'user NAME #SHA256HEX'")
            digest = parts[2][1:].lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise AclError(f"{path}:{n}: the password hash must be 64 hex digits")
            users[parts[1]] = digest
        if not users:
            raise AclError(f"{path}: no user")
        return cls(users)

    def default_user(self) -> str | None:
        """The user a new connection is before AUTH: ``default`` when auth is off."""
        return "default" if self.open else None

    def check(self, username: str, password: bytes) -> str | None:
        """The user name when the password is right, else None."""
        if self.open:
            return username
        want = self.users.get(username)
        got = hashlib.sha256(password).hexdigest()
        if want is None:
            hmac.compare_digest(got, got)  # same work whether or not the user exists
            return None
        return username if hmac.compare_digest(got, want) else None


def user_line(username: str, password: str) -> str:
    """The users-file line for a user (for the role that writes the file)."""
    return f"user {username} #{hashlib.sha256(password.encode()).hexdigest()}"
