"""Install a P4 pipeline idempotently, by cookie.

The cookie is finsy's: the first 8 bytes of SHA-256 over the deterministic serialisation of
the P4Info followed by the device config bytes, so a switch that finsy's own ``Switch`` set up
is recognised too. The switch keeps the cookie (P4Runtime requires it), so
``install_pipeline`` asks for the cookie only (COOKIE_ONLY), does nothing when it matches,
verifies the config (VERIFY) in check mode and commits it (VERIFY_AND_COMMIT) otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from finsy.p4schema import P4SchemaCache
from finsy.proto import p4i, p4r

from netmigrate.p4rt.session import ConfigAction, P4RTSession, ResponseType, load_p4info


def pipeline_cookie(p4info: p4i.P4Info, device_config: bytes) -> int:
    return P4SchemaCache.compute_cookie(p4info.SerializeToString(deterministic=True), device_config)


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    p4info: p4i.P4Info
    device_config: bytes
    cookie: int

    @classmethod
    def load(cls, p4info: Path | p4i.P4Info, device_config: Path | bytes) -> PipelineConfig:
        info = load_p4info(p4info) if isinstance(p4info, Path) else p4info
        blob = device_config.read_bytes() if isinstance(device_config, Path) else device_config
        return cls(info, blob, pipeline_cookie(info, blob))

    def message(self) -> p4r.ForwardingPipelineConfig:
        return p4r.ForwardingPipelineConfig(
            p4info=self.p4info,
            p4_device_config=self.device_config,
            cookie=p4r.ForwardingPipelineConfig.Cookie(cookie=self.cookie),
        )


@dataclass(frozen=True, slots=True)
class PipelineResult:
    changed: bool
    cookie: int
    #: The switch's cookie before (None: no pipeline, or one without a cookie).
    previous_cookie: int | None
    #: True when the switch verified the config (check mode, or a change was made).
    verified: bool


async def current_cookie(session: P4RTSession) -> int | None:
    config = await session.get_pipeline(ResponseType.COOKIE_ONLY)
    if config is None or not config.HasField("cookie"):
        return None
    return config.cookie.cookie


async def install_pipeline(
    session: P4RTSession,
    config: PipelineConfig,
    *,
    check_mode: bool = False,
    force: bool = False,
) -> PipelineResult:
    """Make ``config`` the switch's pipeline. Changes nothing when the cookie matches.

    A switch that refuses the config raises
    :class:`~netmigrate.p4rt.errors.PipelineMismatchError` with its reason. After a commit
    the session uses the installed P4Info.
    """
    before = await current_cookie(session)
    if before == config.cookie and not force:
        if not session.has_schema:
            session.set_schema(config.p4info)
        return PipelineResult(False, config.cookie, before, verified=False)
    if check_mode:
        await session.set_pipeline(ConfigAction.VERIFY, config.message())
        return PipelineResult(True, config.cookie, before, verified=True)
    await session.set_pipeline(ConfigAction.VERIFY_AND_COMMIT, config.message())
    session.set_schema(config.p4info)
    return PipelineResult(True, config.cookie, before, verified=True)


async def fetch_p4info(session: P4RTSession) -> p4i.P4Info | None:
    """The P4Info installed on the switch (and adopt it for the session), or None."""
    config = await session.get_pipeline(ResponseType.P4INFO_AND_COOKIE)
    if config is None or not config.HasField("p4info"):
        return None
    session.set_schema(config.p4info)
    return config.p4info
