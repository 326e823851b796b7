"""finsy client options for tests against the lab switch."""

from __future__ import annotations

from typing import Any

from netmigrate.lab.forwarding import DEVICE_CONFIG


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
