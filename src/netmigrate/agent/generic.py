"""Generic Redis commands at the agent (CMD_READ / CMD_WRITE, DESIGN section 11).

A generic request carries Redis commands on keys of one slot. The agent finds their keys and
whether they write from *its own Redis'* command table (``COMMAND``, read once at connect), so a
request that calls itself a read but would write is refused, and the keys it checks (slot,
reserved prefixes) are the keys Redis will touch.

Each request runs as one Lua script, for two reasons:

- a write must be applied, recorded under its request id (D16: at-most-once across an agent
  restart) and, at a migration target, marked dirty *in one step*: the script does all three,
  and a retry of a recorded id gets the recorded reply instead of a second application;
- the reply must reach the client as the RESP bytes Redis would have sent, while the data path
  parses replies with hiredis (which does not keep them). The script writes the reply as RESP
  text (:mod:`~netmigrate.agent.generic_lua`), so the agent forwards it untouched.

Replies are written in the request's RESP version. RESP3's null inside an array turns into a
hole of a Lua table, so a RESP3 read runs twice in its script, once under RESP2 for the shape
(``enc3`` there). Small differences from a plain Redis connection remain and are documented
(docs/compatibility.md): in RESP2 a null array (``*-1``) comes back as a null bulk (``$-1``),
and an integer reply above 2^53 loses its low digits (Lua numbers are doubles; Redis' own
scripts have the same limit). Commands Redis does
not allow in scripts (``noscript``: EVALSHA, FCALL, WATCH ...) cannot be sent this way; an
application's EVAL / EVAL_RO (the form the gateway sends EVALSHA and FCALL in) is run by the
request script itself (:mod:`~netmigrate.agent.generic_lua`), over the keys it declares.
Only keys of commands that succeeded are marked dirty: a failed write changed nothing, and a
dirty mark on it would stop the copy from bringing the source's value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from netmigrate.agent.generic_lua import (
    NON_BLOCKING_FORMS,
    READ_SCRIPT_SHA,
    SCRIPT_COMMANDS,
    WRITE_SCRIPT_SHA,
)
from netmigrate.agent.generic_lua import array as _array
from netmigrate.rediscmd.table import (
    Classified,
    CommandError,
    CommandTable,
    Kind,
    in_transaction,
)


class GenericRefused(Exception):
    """A generic request the agent will not run; ``message`` says why (BAD_REQUEST)."""

    def __init__(self, message: str, crossslot: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.crossslot = crossslot


@dataclass(frozen=True)
class GenericRequest:
    """What the agent found in a generic request: its commands classified, and its keys."""

    commands: tuple[tuple[bytes, ...], ...]
    classified: tuple[Classified, ...]
    transaction: bool
    #: The RESP version the replies are written in.
    resp: int = 2

    @property
    def keys(self) -> tuple[bytes, ...]:
        return tuple(k for c in self.classified for k in c.keys)

    @property
    def writes(self) -> bool:
        return any(c.kind is Kind.WRITE for c in self.classified)

    def keys_needing_old_value(self) -> tuple[bytes, ...]:
        """Keys a migration target must pull before running this: every key it names.

        Key-spec flags do not say whether a command's *reply* depends on the old value: DEL
        (``RM``) counts the keys that existed, SETNX / MSETNX / RENAMENX (``OW insert``) do
        nothing when the key exists, COPY and RESTORE (``OW``) fail on an existing key
        without REPLACE. Run without the key, each would answer (or do) what the source's
        value contradicts, so no key is skipped; a pull costs one round trip, and only for a
        key the target is not authoritative for yet."""
        return tuple(dict.fromkeys(self.keys))


class GenericCommands:
    """Checks generic requests against the table of this agent's Redis and builds the scripts'
    calls (raw RESP, as the data path sends them)."""

    def __init__(self, table: CommandTable, record_ttl_ms: int) -> None:
        self.table = table
        self._ttl = b"%d" % record_ttl_ms

    def check(
        self,
        commands: Sequence[tuple[bytes, ...]],
        transaction: bool,
        write_op: bool,
        slot: int,
        resp: int = 2,
    ) -> GenericRequest:
        """Classify; raises :class:`GenericRefused` for anything the request may not do."""
        classified = []
        for args in commands:
            try:
                c = self.table.classify(args)
            except CommandError as e:
                raise GenericRefused(e.message, e.message.startswith("CROSSSLOT")) from None
            if transaction:
                c = in_transaction(c)
            if c.kind is Kind.UNSUPPORTED:
                raise GenericRefused(f"ERR {c.reason}")
            if c.kind is Kind.FANOUT:
                raise GenericRefused(f"ERR {c.spec.name.upper()} is not a command of one slot")
            if (
                "noscript" in c.spec.flags
                and c.spec.name not in SCRIPT_COMMANDS
                and not (transaction and c.spec.name in NON_BLOCKING_FORMS)
            ):
                raise GenericRefused(
                    f"ERR {c.spec.name.upper()} cannot run inside a NetMigrate request"
                )
            if c.kind is Kind.WRITE and not write_op:
                raise GenericRefused(
                    f"ERR {c.spec.name.upper()} writes: it must be sent as a write request"
                )
            classified.append(c)
        slots = {c.slot for c in classified if c.slot is not None}
        if len(slots) > 1:
            raise GenericRefused("CROSSSLOT Keys in request don't hash to the same slot", True)
        if slots and slots != {slot}:
            raise GenericRefused(
                f"ERR slot {slot} in the header, but the keys hash to {slots.pop()}"
            )
        return GenericRequest(tuple(commands), tuple(classified), transaction, resp)

    def read_call(self, request: GenericRequest) -> bytes:
        """EVALSHA of the read script for the request's read commands."""
        keys = request.keys
        argv: list[bytes] = [b"%d" % request.resp, b"%d" % len(request.commands)]
        for args in request.commands:
            argv.append(b"%d" % len(args))
            argv.extend(args)
        return _array((b"EVALSHA", READ_SCRIPT_SHA, b"%d" % len(keys), *keys, *argv))

    def write_call(
        self,
        request: GenericRequest,
        record_key: bytes,
        reply_header: bytes,
        dirty: bytes | None,
    ) -> bytes:
        """EVALSHA of the write script: apply, record under ``record_key``, mark dirty."""
        keys: list[bytes] = []
        argv: list[bytes] = [
            record_key,
            self._ttl,
            reply_header,
            dirty or b"",
            b"%d" % len(request.commands),
            b"1" if request.transaction else b"0",
            b"%d" % request.resp,
        ]
        for c, args in zip(request.classified, request.commands, strict=True):
            keys.extend(c.keys)
            argv.append(b"%d" % len(c.keys))
            argv.append(b"%d" % len(args))
            argv.append(b"1" if c.kind is Kind.READ else b"0")
            argv.extend(args)
        return _array((b"EVALSHA", WRITE_SCRIPT_SHA, b"%d" % len(keys), *keys, *argv))
