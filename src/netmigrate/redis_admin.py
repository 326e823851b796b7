"""Idempotent runtime administration of one Redis instance: settings, one ACL user, facts.

The library behind the ``netmigrate.core.redis_node`` Ansible module. Every change is planned
first (read the current state, compute the difference, validate the input against the server)
and applied afterwards, so bad input fails before anything changed and check mode can report
the plan without applying it. Passwords never leave this module except as the SHA-256 digest
that Redis itself stores (``#<hex>`` in ``ACL SETUSER``), and never appear in plans, facts or
error messages.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from netmigrate.agent.redis_node import (
    RedisNodeError,
    ensure_single_node_cluster,
    owned_slots_from_nodes,
)

__all__ = [
    "SECRET_SETTINGS",
    "AclPlan",
    "AclUserSpec",
    "ConfigPlan",
    "NodeChange",
    "NodeFacts",
    "NodeSpec",
    "RedisAdminError",
    "RedisNodeError",
    "apply_acl",
    "apply_config",
    "check_settings",
    "ensure_node",
    "gather_facts",
    "is_secret_rule",
    "normalize_setting",
    "persist",
    "persistence_check",
    "plan_acl",
    "plan_config",
]

# Settings whose values are credentials: taking them through a plain dict would log them.
SECRET_SETTINGS = frozenset(
    {"requirepass", "masterauth", "masteruser", "tls-key-file-pass", "tls-client-key-file-pass"}
)

# ACL rules that set passwords or switch the user on/off: the module owns those (password is a
# no_log option, the user is always enabled), so they must not come in through the rule list.
_RESERVED_RULE = re.compile(r"^(?:[<>#!].*|nopass|resetpass|on|off|reset)$", re.IGNORECASE)
# The ones among them that carry a password or its digest.
_SECRET_RULE = re.compile(r"^[<>#!]")

# Redis's memory units (redis.conf: "1k => 1000 bytes, 1kb => 1024 bytes", same for m/g).
_MEMORY_TOKEN = re.compile(r"^(\d+)([kmg]b?)$", re.IGNORECASE)
_UNIT_BYTES = {
    "k": 1000,
    "kb": 1024,
    "m": 1000**2,
    "mb": 1024**2,
    "g": 1000**3,
    "gb": 1024**3,
}


class RedisAdminError(Exception):
    """Invalid input or a refusal by the server; the message is safe to show and log."""


def is_secret_rule(rule: str) -> bool:
    """Whether an ACL rule carries a password (``>pw``, ``<pw``) or digest (``#hex``, ``!hex``)."""
    return bool(_SECRET_RULE.match(rule))


# --------------------------------------------------------------------------------- settings


def normalize_setting(value: object) -> str:
    """The form ``CONFIG GET`` reports for a value given the way redis.conf accepts it.

    Booleans become yes/no and memory sizes with a unit become bytes, token by token, so
    ``256mb`` equals ``268435456`` and ``normal 0 0 0 replica 256mb 64mb 60`` equals its
    byte form. Anything else is compared verbatim.
    """
    if isinstance(value, bool):
        return "yes" if value else "no"
    tokens = str(value).split()
    out = []
    for token in tokens:
        m = _MEMORY_TOKEN.match(token)
        out.append(str(int(m[1]) * _UNIT_BYTES[m[2].lower()]) if m else token)
    return " ".join(out)


@dataclass(frozen=True)
class ConfigPlan:
    """Current values of the requested settings and the ones that must change."""

    before: dict[str, str]
    changes: dict[str, str]

    @property
    def after(self) -> dict[str, str]:
        return {**self.before, **{k: normalize_setting(v) for k, v in self.changes.items()}}


#: Eviction policies that may evict any key: the agent's own keys (slot ownership, migration
#: markers, the dirty sets of a migration target) have no TTL and must never go, or an agent
#: would answer for data it lost and two agents could own one slot (#12, item 8).
UNSAFE_EVICTION_POLICIES = frozenset({"allkeys-lru", "allkeys-lfu", "allkeys-random"})


def check_settings(desired: Mapping[str, object]) -> None:
    """Refuse names that are patterns or hold credentials, non-scalar values and eviction
    policies that can evict the agent's own keys (no server)."""
    for name, value in desired.items():
        if not name or any(c in name for c in "*?[] "):
            raise RedisAdminError(f"invalid Redis setting name {name!r}: give one exact name")
        if name.lower() in SECRET_SETTINGS:
            raise RedisAdminError(
                f"setting {name!r} holds a credential and would be logged through the plain "
                "config dict; manage passwords with the ACL user options instead"
            )
        if value is None or isinstance(value, (dict, list)):
            raise RedisAdminError(f"setting {name!r} needs a scalar value, got {value!r}")
        if name.lower() == "maxmemory-policy" and str(value).lower() in UNSAFE_EVICTION_POLICIES:
            raise RedisAdminError(
                f"maxmemory-policy {value} may evict any key, including the NetMigrate agent's "
                "own (slot ownership, migration markers, dirty marks): the agent would then "
                "answer for data it no longer has; use noeviction"
            )


def plan_config(client: redis.Redis, desired: Mapping[str, object]) -> ConfigPlan:
    """Compare ``desired`` settings with ``CONFIG GET``; unknown names are refused."""
    check_settings(desired)
    before: dict[str, str] = {}
    changes: dict[str, str] = {}
    for name, value in desired.items():
        reply = client.config_get(name)
        if not reply:
            raise RedisAdminError(f"Redis has no setting named {name!r} (CONFIG GET is empty)")
        # One exact name yields one entry; an alias (slaveof/replicaof) may come back renamed.
        current = reply.get(name, next(iter(reply.values())))
        before[name] = current
        wanted = normalize_setting(value)
        if wanted != normalize_setting(current):
            changes[name] = wanted
    return ConfigPlan(before=before, changes=changes)


def apply_config(client: redis.Redis, plan: ConfigPlan) -> dict[str, str]:
    """Apply all changes in one ``CONFIG SET`` (atomic since Redis 7: all or nothing).

    Returns the values read back afterwards, which is the truth the caller reports.
    """
    if plan.changes:
        args: list[str] = []
        for name, value in plan.changes.items():
            args += [name, value]
        try:
            client.execute_command("CONFIG", "SET", *args)
        except redis.ResponseError as exc:
            raise RedisAdminError(f"Redis refused the settings: {exc}") from exc
    return {name: next(iter(client.config_get(name).values())) for name in plan.before}


# --------------------------------------------------------------------------------- ACL user


@dataclass(frozen=True)
class AclUserSpec:
    """The wanted state of one ACL user. ``password`` is required when ``present``."""

    name: str
    present: bool = True
    password: str | None = field(default=None, repr=False)
    rules: tuple[str, ...] = ("~*", "&*", "+@all")

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() for c in self.name):
            raise RedisAdminError(f"invalid ACL user name {self.name!r}")
        if not self.present:
            if self.name == "default":
                raise RedisAdminError("Redis does not allow removing the 'default' user")
            return
        if not self.password:
            raise RedisAdminError(f"ACL user {self.name!r}: a password is required")
        for rule in self.rules:
            if not rule or any(c.isspace() for c in rule):
                raise RedisAdminError(f"ACL user {self.name!r}: invalid rule {rule!r}")
            if _RESERVED_RULE.match(rule):
                # Never echo the rule itself: it may be a password someone put in the list.
                raise RedisAdminError(
                    f"ACL user {self.name!r}: a rule sets passwords or on/off/reset; those are "
                    "managed by the password option (the user is always enabled)"
                )


@dataclass(frozen=True)
class AclPlan:
    """Current and wanted description of a user, in a form safe to show (no password hash)."""

    name: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    changed: bool
    _setuser_args: tuple[str, ...] = field(default=(), repr=False)


def _as_dict(reply: Any) -> dict[str, Any]:
    # redis-py turns ACL GETUSER into a dict; older versions leave the flat key/value list.
    if isinstance(reply, dict):
        return dict(reply)
    return dict(zip(reply[::2], reply[1::2], strict=True))


def _describe(getuser: dict[str, Any]) -> dict[str, Any]:
    """ACL GETUSER reply -> comparable description; ``passwords`` keeps only the digests."""

    def _text(v: Any) -> str:
        return " ".join(v) if isinstance(v, list) else str(v)

    return {
        "flags": sorted(getuser.get("flags", [])),
        "passwords": sorted(getuser.get("passwords", [])),
        "commands": _text(getuser.get("commands", "")),
        "keys": _text(getuser.get("keys", "")),
        "channels": _text(getuser.get("channels", "")),
        "selectors": [str(s) for s in getuser.get("selectors", [])],
    }


def _public(desc: dict[str, Any] | None, digest: str | None) -> dict[str, Any] | None:
    """What may be shown in diffs/results: whether the password matches, never the digest."""
    if desc is None:
        return None
    out = {k: v for k, v in desc.items() if k != "passwords"}
    if digest is None:
        out["password"] = "set" if desc["passwords"] else "none"
    else:
        out["password"] = "matches" if desc["passwords"] == [digest] else "differs"
    return out


def _read_user(client: redis.Redis, name: str) -> dict[str, Any] | None:
    reply = client.execute_command("ACL", "GETUSER", name)
    return None if reply is None else _describe(_as_dict(reply))


def _canonical_rules(client: redis.Redis, rules: Sequence[str]) -> dict[str, Any]:
    """How Redis itself stores a user made of ``rules`` (it merges and reorders them: '+get
    +@all' becomes '+@all'), described as enabled. No password is involved.

    Re-implementing Redis's normalisation would drift between versions, so the server parses
    the rules for a throw-away user. That user is never enabled ('reset' leaves it off and
    without password, so nobody can ever log in as it; its flags are reported as 'on' here)
    and it is created, read and deleted inside one MULTI/EXEC, so no other client sees it.
    ACL changes are neither replicated nor persisted (only ACL SAVE / CONFIG REWRITE write them).
    """
    probe = f"netmigrate-probe-{secrets.token_hex(8)}"
    try:
        pipe = client.pipeline(transaction=True)
        pipe.execute_command("ACL", "SETUSER", probe, "reset", *rules)
        pipe.execute_command("ACL", "GETUSER", probe)
        pipe.execute_command("ACL", "DELUSER", probe)
        set_reply, get_reply, _ = pipe.execute(raise_on_error=False)
    except redis.exceptions.OutOfMemoryError:
        # Above maxmemory Redis refuses to queue anything in MULTI, but ACL commands still run:
        # the disabled probe is then visible to ACL LIST for the moment it exists.
        set_reply = get_reply = None
        try:
            client.execute_command("ACL", "SETUSER", probe, "reset", *rules)
            get_reply = client.execute_command("ACL", "GETUSER", probe)
        except redis.ResponseError as exc:
            set_reply = exc
        finally:
            client.execute_command("ACL", "DELUSER", probe)
    except redis.ResponseError as exc:  # MULTI/EXEC itself refused (e.g. no permission)
        raise RedisAdminError(f"cannot check ACL rules on this server: {exc}") from exc
    if isinstance(set_reply, Exception):
        raise RedisAdminError(f"Redis rejected the ACL rules: {set_reply}")
    if isinstance(get_reply, Exception) or get_reply is None:
        raise RedisAdminError(f"cannot read back the ACL rules: {get_reply}")
    desc = _describe(_as_dict(get_reply))
    desc["flags"] = sorted("on" if flag == "off" else flag for flag in desc["flags"])
    return desc


def plan_acl(client: redis.Redis, spec: AclUserSpec) -> AclPlan:
    """Compare the user on the server with ``spec`` (rules normalised by the server itself)."""
    current = _read_user(client, spec.name)
    if not spec.present:
        return AclPlan(
            name=spec.name,
            before=_public(current, None),
            after=None,
            changed=current is not None,
        )
    digest = hashlib.sha256((spec.password or "").encode()).hexdigest()
    wanted = _canonical_rules(client, spec.rules)
    wanted["passwords"] = [digest]
    return AclPlan(
        name=spec.name,
        before=_public(current, digest),
        after=_public(wanted, digest),
        changed=current != wanted,
        # '#<digest>' sets the password without sending it: Redis stores only the digest.
        _setuser_args=("reset", "on", *spec.rules, f"#{digest}"),
    )


def apply_acl(client: redis.Redis, plan: AclPlan) -> None:
    """Make the server match ``plan`` with one atomic ``ACL SETUSER`` or ``ACL DELUSER``."""
    if not plan.changed:
        return
    try:
        if plan.after is None:
            client.execute_command("ACL", "DELUSER", plan.name)
        else:
            client.execute_command("ACL", "SETUSER", plan.name, *plan._setuser_args)
    except redis.ResponseError as exc:
        # The reply never contains the digest: the rules were validated by the probe first.
        raise RedisAdminError(f"Redis refused to change ACL user {plan.name!r}: {exc}") from exc


# --------------------------------------------------------------------------------- persistence


def persistence_check(client: redis.Redis, *, config: bool, acl: bool) -> None:
    """Fail before any change if the requested changes could not be written to disk."""
    if not (config or acl):
        return
    has_config_file = bool(client.info("server").get("config_file"))
    has_acl_file = bool(next(iter(client.config_get("aclfile").values()), ""))
    if (config or (acl and not has_acl_file)) and not has_config_file:
        raise RedisAdminError(
            "persist=true needs a Redis started with a config file (CONFIG REWRITE)"
            + ("" if has_acl_file else " or an aclfile (ACL SAVE)")
        )


def persist(client: redis.Redis, *, config: bool, acl: bool) -> None:
    """Write applied changes to disk: ACL SAVE when an aclfile is used, else CONFIG REWRITE."""
    has_acl_file = bool(next(iter(client.config_get("aclfile").values()), ""))
    try:
        if acl and has_acl_file:
            client.execute_command("ACL", "SAVE")
        if config or (acl and not has_acl_file):
            client.execute_command("CONFIG", "REWRITE")
    except redis.ResponseError as exc:
        raise RedisAdminError(f"changes applied but not saved to disk: {exc}") from exc


# --------------------------------------------------------------------------------- facts


@dataclass(frozen=True)
class NodeFacts:
    version: str
    cluster_enabled: bool
    cluster_state: str | None
    node_id: str | None
    known_nodes: int
    slots_owned: int
    dbsize: int
    used_memory: int
    maxmemory: int
    maxmemory_policy: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def gather_facts(client: redis.Redis) -> NodeFacts:
    server = client.info("server")
    memory = client.info("memory")
    cluster_enabled = bool(client.info("cluster").get("cluster_enabled"))
    settings = client.config_get("maxmemory*")
    state = node_id = None
    known = slots = 0
    if cluster_enabled:
        info = client.cluster("INFO")
        state = str(info.get("cluster_state"))
        known = int(info.get("cluster_known_nodes", 0))
        node_id = str(client.cluster("MYID"))
        slots = len(owned_slots_from_nodes(client.execute_command("CLUSTER", "NODES")))
    return NodeFacts(
        version=str(server["redis_version"]),
        cluster_enabled=cluster_enabled,
        cluster_state=state,
        node_id=node_id,
        known_nodes=known,
        slots_owned=slots,
        dbsize=int(client.dbsize()),
        used_memory=int(memory.get("used_memory", 0)),
        maxmemory=int(settings.get("maxmemory", 0)),
        maxmemory_policy=str(settings.get("maxmemory-policy", "")),
    )


# ------------------------------------------------------------------------- the whole node


@dataclass(frozen=True)
class NodeSpec:
    """The wanted state of one instance: settings, at most one ACL user, cluster mode."""

    settings: Mapping[str, object] = field(default_factory=dict)
    acl_user: AclUserSpec | None = None
    #: Make it a one-node cluster owning every slot (else cluster mode is left alone).
    single_owner: bool = False
    #: Write changed settings and ACL users to disk (CONFIG REWRITE, ACL SAVE).
    persist: bool = False


@dataclass(frozen=True)
class NodeChange:
    """What :func:`ensure_node` found and did (in a check, would do); no password material."""

    before: NodeFacts
    #: Facts after the run (``before`` in a check).
    after: NodeFacts
    settings_before: dict[str, str]
    #: The requested settings as ``CONFIG GET`` reports them after the run (would be).
    settings_after: dict[str, str]
    changed_settings: list[str]
    acl: AclPlan | None
    slots_added: int

    @property
    def changed(self) -> bool:
        return (
            bool(self.changed_settings)
            or bool(self.acl and self.acl.changed)
            or (self.slots_added > 0)
        )

    def diff(self) -> dict[str, dict[str, Any]]:
        """Before and after of everything requested (Ansible's diff shape)."""
        old: dict[str, Any] = {
            "settings": self.settings_before,
            "slots_owned": self.before.slots_owned,
        }
        new: dict[str, Any] = {
            "settings": self.settings_after,
            "slots_owned": self.before.slots_owned + self.slots_added,
        }
        if self.acl:  # described without password material (see AclPlan)
            old["acl_user"] = {self.acl.name: self.acl.before}
            new["acl_user"] = {self.acl.name: self.acl.after}
        return {"before": old, "after": new}


def ensure_node(
    client: redis.Redis, spec: NodeSpec, *, check: bool = False, applied: list[str] | None = None
) -> NodeChange:
    """Plan everything (reads only: every refusal happens before a change), then apply it
    unless ``check``. ``applied`` gets the name of each part once it is applied (``settings``,
    ``acl_user``, ``cluster``), so a caller that sees an error half-way can say what changed."""
    done = applied if applied is not None else []
    before = gather_facts(client)
    config_plan = plan_config(client, spec.settings)
    acl_plan = plan_acl(client, spec.acl_user) if spec.acl_user else None
    acl_changes = bool(acl_plan and acl_plan.changed)
    slots_plan = ensure_single_node_cluster(client, check_only=True) if spec.single_owner else None
    if spec.persist:
        persistence_check(client, config=bool(config_plan.changes), acl=acl_changes)

    settings_after = config_plan.after
    changed_settings = sorted(config_plan.changes)
    slots_added = slots_plan.added_slots if slots_plan else 0
    after = before
    if not check:
        if config_plan.changes:
            settings_after = apply_config(client, config_plan)
            done.append("settings")
            # The read-back is the truth: a value Redis normalises to what it had is no change.
            changed_settings = sorted(
                k for k in config_plan.before if settings_after[k] != config_plan.before[k]
            )
        if acl_plan and acl_changes:
            apply_acl(client, acl_plan)
            done.append("acl_user")
        if slots_plan and slots_plan.changed:
            slots_added = ensure_single_node_cluster(client).added_slots
            done.append("cluster")
        if spec.persist and (changed_settings or acl_changes):
            persist(client, config=bool(changed_settings), acl=acl_changes)
        after = gather_facts(client)
    return NodeChange(
        before=before,
        after=after,
        settings_before=config_plan.before,
        settings_after=settings_after,
        changed_settings=changed_settings,
        acl=acl_plan,
        slots_added=slots_added,
    )
