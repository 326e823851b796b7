"""P4Runtime clients for tests against the lab switch: finsy options, and a session probe."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from netmigrate.lab.forwarding import DEVICE_CONFIG

if TYPE_CHECKING:
    from netmigrate.p4rt import TlsOptions


def finsy_options(**kw: Any) -> Any:
    """finsy ``SwitchOptions`` for the lab switch: device id 1, the committed P4Info."""
    import finsy as fy  # the switch process itself does not need the client library

    from netmigrate.resources import p4info_path

    base: dict[str, Any] = {"p4info": p4info_path(), "device_id": 1, "initial_election_id": 10}
    base.update(kw)
    return fy.SwitchOptions(**base)


def primary_options(**kw: Any) -> Any:
    """A finsy primary that installs (and so resets) the pipeline when it connects."""
    return finsy_options(p4blob=DEVICE_CONFIG, p4force=True, **kw)


async def p4runtime_opens(address: str, tls: TlsOptions | None) -> bool:
    """Whether a P4Runtime session to ``address`` opens with ``tls`` (None: plain text); a
    refused handshake or certificate is False, not an error."""
    from netmigrate.p4rt import P4RTSession, SwitchUnreachableError

    session = P4RTSession(address, tls=tls, election_id=1, timeout=5)
    try:
        await session.open(require_primary=False)
    except SwitchUnreachableError:
        return False
    await session.close()
    return True
