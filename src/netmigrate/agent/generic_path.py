"""The data path's branch for generic Redis commands (CMD_READ / CMD_WRITE, DESIGN section 11).

A mixin of :class:`~netmigrate.agent.datapath.DataPath`: the same checks as a typed op, with
the keys and the kind of each command from the command table of the agent's own Redis
(:mod:`netmigrate.agent.generic`), the scripts' calls queued in arrival order with the typed
ops, and their replies (Redis' RESP bytes) answered and remembered like a typed op's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from netmigrate.agent.commands import OpSpec
from netmigrate.agent.dedup import Address, DedupEntry
from netmigrate.agent.generic import GenericCommands, GenericRefused, GenericRequest
from netmigrate.agent.keyspace_wide import (
    WideCall,
    WideRefused,
    is_keyspace_wide,
    wide_call,
    wide_reply,
)
from netmigrate.agent.reserved import RESERVED_MESSAGE, RESERVED_PREFIXES, request_id_key
from netmigrate.agent.resp import ReplyError, RespConnection
from netmigrate.agent.slots import Admission, SlotState
from netmigrate.protocol.codec import (
    Command,
    HeaderFields,
    RespReply,
    encode_body,
    pack_reply_header,
)
from netmigrate.protocol.constants import F_FLAGS, F_OP, F_REQUEST_ID, F_SLOT, Op, Status
from netmigrate.rediscmd.resp import Error, encode
from netmigrate.rediscmd.table import CommandTable

if TYPE_CHECKING:
    from netmigrate.agent.datapath import DataPath

    _Base = DataPath
else:
    _Base = object

log = logging.getLogger(__name__)

_OK = int(Status.OK)
_BAD_REQUEST = int(Status.BAD_REQUEST)
_BUSY = int(Status.BUSY)
_CROSSSLOT = int(Status.CROSSSLOT)
_WRONG_OWNER = int(Status.WRONG_OWNER)
_CMD_READ = int(Op.CMD_READ)
_SERVE = Admission.SERVE
_TARGET = Admission.TARGET
_MIGRATING = (SlotState.MIGRATING_OUT, SlotState.FROZEN, SlotState.MIGRATING_IN)


class GenericPath(_Base):
    """CMD_READ / CMD_WRITE for :class:`~netmigrate.agent.datapath.DataPath`."""

    #: Generic commands checked against the command table of the Redis this agent is
    #: connected to; None until connected.
    generic: GenericCommands | None = None

    def _handle_generic(
        self,
        fields: HeaderFields,
        body: Command,
        spec: OpSpec,
        data: bytes,
        addr: Address,
        commands: list[bytes],
        callbacks: list[Any],
    ) -> None:
        """CMD_READ / CMD_WRITE: the same checks as a typed op, with the keys and the kind of
        each command from this Redis' command table."""
        generic = self.generic
        if generic is None:
            self._refuse(fields, addr, _BUSY, "the agent is reconnecting to Redis")
            return
        if not body.commands:
            self._refuse(fields, addr, _BAD_REQUEST, "a request without a command")
            return
        write_op = not spec.read_only
        if body.transaction and not write_op:
            message = "a transaction runs as one write request (CMD_WRITE)"
            self._refuse(fields, addr, _BAD_REQUEST, message)
            return
        if len(body.commands) == 1 and not body.transaction and is_keyspace_wide(body.commands[0]):
            self._handle_wide(fields, body.commands[0], write_op, data, addr, commands, callbacks)
            return
        slot = fields[F_SLOT]
        try:
            request = generic.check(body.commands, body.transaction, write_op, slot, body.resp)
        except GenericRefused as e:
            self._refuse(fields, addr, _CROSSSLOT if e.crossslot else _BAD_REQUEST, e.message)
            return
        if any(k.startswith(RESERVED_PREFIXES) for k in request.keys):
            self._refuse(fields, addr, _BAD_REQUEST, RESERVED_MESSAGE)
            return
        admission = self.table.admit(slot, fields[F_OP], fields[F_FLAGS])
        if admission is not _SERVE:
            if admission is _TARGET:
                self.target.handle(fields, request, spec, data, addr, commands, callbacks)  # type: ignore[union-attr]
                return
            message = f"slot {slot} is not served by server {self.server_id}"
            self._refuse(fields, addr, _WRONG_OWNER, message)
            return
        entry = self.begin(fields, addr, data)
        if entry is not None:
            self.queue_generic(fields, request, entry, commands, callbacks)

    def queue_generic(
        self,
        fields: HeaderFields,
        request: GenericRequest,
        entry: DedupEntry,
        commands: list[bytes],
        callbacks: list[Any],
        *,
        dirty: bytes | None = None,
        on_applied: Callable[[tuple[bytes, ...]], None] | None = None,
    ) -> None:
        """Queue a begun generic request. CMD_WRITE runs in the generic write script, which
        applies, records the reply under the request id and (with ``dirty``) marks the keys of
        the commands that succeeded, in one step; ``on_applied`` gets those keys once Redis
        answered (never for a replay of an earlier record)."""
        generic = self.generic
        if generic is None:
            self.fail(fields, entry, _BUSY, "the agent is reconnecting to Redis")
            return
        if fields[F_OP] == _CMD_READ:
            command = generic.read_call(request)
        else:
            command = generic.write_call(
                request,
                request_id_key(fields[F_REQUEST_ID]),
                pack_reply_header(fields, _OK),
                dirty,
            )
        commands.append(command)
        callbacks.append((self._on_generic_reply, (fields, entry, on_applied)))

    def _on_generic_reply(
        self,
        reply: Any,
        ctx: tuple[HeaderFields, DedupEntry, Callable[[tuple[bytes, ...]], None] | None],
    ) -> None:
        fields, entry, on_applied = ctx
        applied = True
        if isinstance(reply, Exception):
            status, body_bytes, applied = self._redis_failure(reply)
            datagram = pack_reply_header(fields, status) + body_bytes
        elif type(reply) is list and reply[0] == 1:
            # The write script found the request id recorded: the recorded reply datagram.
            self.stats.dedup_hits += 1
            datagram, status = self._replay(reply[1], fields)
        else:
            if type(reply) is list:  # the write script: {0, reply, keys it marked ...}
                resp, marked = reply[1], tuple(reply[2:])
                if marked and on_applied is not None:
                    on_applied(marked)
            else:
                resp = reply
            datagram, status = self._fit(fields, encode_body(RespReply(resp)))
        self._answer(entry, datagram, status, applied)

    def _handle_wide(
        self,
        fields: HeaderFields,
        args: tuple[bytes, ...],
        write_op: bool,
        data: bytes,
        addr: Address,
        commands: list[bytes],
        callbacks: list[Any],
    ) -> None:
        """A keyspace-wide command: this server's part of the answer, whatever the header's
        slot (the gateway sends it to every server directly; :mod:`.keyspace_wide`)."""
        try:
            call = wide_call(args)
        except WideRefused as e:
            refused: bytes | None = e.reply
        else:
            refused = None
            if call.writes and not write_op:
                message = f"{args[0].decode(errors='replace').upper()} writes: send CMD_WRITE"
                self._refuse(fields, addr, _BAD_REQUEST, message)
                return
            if call.flush and any(self.table.count(s) for s in _MIGRATING):
                refused = encode(
                    Error(
                        f"ERR {args[0].decode(errors='replace').upper()} is not served while "
                        "slots of the keyspace migrate"
                    )
                )
        entry = self.begin(fields, addr, data)
        if entry is None:
            return
        if refused is not None:
            datagram, status = self._fit(fields, encode_body(RespReply(refused)))
            self._answer(entry, datagram, status, False)
            return
        commands.append(call.command)
        callbacks.append((self._on_wide_reply, (fields, entry, args, call)))

    def _on_wide_reply(
        self, reply: Any, ctx: tuple[HeaderFields, DedupEntry, tuple[bytes, ...], WideCall]
    ) -> None:
        fields, entry, args, call = ctx
        if isinstance(reply, ReplyError):
            body = encode(Error(str(reply)))
        elif isinstance(reply, Exception):
            status, body_bytes, applied = self._redis_failure(reply)
            self._answer(entry, pack_reply_header(fields, status) + body_bytes, status, applied)
            return
        else:
            body = wide_reply(args, call, reply)
        datagram, status = self._fit(fields, encode_body(RespReply(body)))
        self._answer(entry, datagram, status, True)


async def command_table_of(conn: RespConnection) -> CommandTable:
    """The command table of the Redis behind ``conn`` (``COMMAND``), so that keys and kinds
    are what this very Redis finds; the shipped table when it will not say (an ACL without
    COMMAND, a proxy)."""
    reply = await conn.call(b"COMMAND")
    if isinstance(reply, list):
        try:
            return CommandTable.from_command_reply(reply)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            log.warning("unreadable COMMAND reply (%s); using the shipped command table", e)
    else:
        log.warning("COMMAND answered %r; using the shipped command table", reply)
    return CommandTable.shipped()
