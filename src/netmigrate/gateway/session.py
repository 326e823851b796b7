"""One client connection of the gateway: what Redis does for a connection, and the rest sent on.

A session answers the commands that belong to the connection itself (HELLO, AUTH, PING, ECHO,
SELECT 0, CLIENT SETNAME / GETNAME / SETINFO / ID, COMMAND, INFO, QUIT, RESET, the MULTI /
EXEC / DISCARD queue, and WATCH / UNWATCH as fingerprints: :mod:`netmigrate.rediscmd.watch`),
serves blocking list and sorted-set commands by polling (:mod:`~netmigrate.gateway.blocking`),
and sends every other command to the keyspace through :class:`Keyspace`: the command table
says whether it reads or writes and which slot its keys are in; a command the switch cannot
steer as one request gets Redis' own error, or a clear one naming the limit. Replies are RESP
bytes in the protocol the client chose.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from netmigrate.gateway import blocking
from netmigrate.gateway.acl import Acl
from netmigrate.gateway.fanout import is_wide
from netmigrate.gateway.scripts import LibraryMeta, ScriptError, Scripts, probe_source
from netmigrate.protocol.slot import key_slot
from netmigrate.rediscmd.resp import OK, Error, ProtocolError, ReplyParser, Status, encode
from netmigrate.rediscmd.table import (
    Classified,
    CommandError,
    CommandTable,
    Kind,
    in_transaction,
)
from netmigrate.rediscmd.watch import UNREAD, check_call, fingerprint_call

_ids = itertools.count(1)
_TO_KEYSPACE = frozenset({Kind.READ, Kind.WRITE, Kind.KEYLESS})
#: Sent as EVAL / EVAL_RO of a body the gateway keeps (:mod:`netmigrate.gateway.scripts`).
_SCRIPT_CALLS = frozenset({b"eval", b"eval_ro", b"evalsha", b"evalsha_ro", b"fcall", b"fcall_ro"})


async def _first(replies: Awaitable[list[bytes]]) -> bytes:
    return (await replies)[0]


class Keyspace(Protocol):
    """Where commands of one slot go: through the switch to the slot's owner (or target).

    Both calls send before they return (so that what a connection pipelined leaves in the
    order it came) and give an awaitable of the replies."""

    #: The RESP versions its replies can be written in; ``HELLO`` offers only these.
    protocols: frozenset[int]

    def batch(
        self, requests: Sequence[tuple[Classified, Sequence[bytes]]], resp: int
    ) -> Awaitable[list[bytes]]:
        """Run pipelined commands of one slot (or without keys) in order; Redis' reply to each
        as RESP bytes of version ``resp``."""
        ...

    def transaction(
        self, slot: int, requests: Sequence[tuple[Classified, Sequence[bytes]]], resp: int
    ) -> Awaitable[bytes]:
        """Run commands of one slot atomically (MULTI/EXEC); EXEC's reply as RESP bytes."""
        ...

    def wide(self, args: Sequence[bytes], resp: int) -> Awaitable[bytes]:
        """Run a keyspace-wide command (:func:`~netmigrate.gateway.fanout.is_wide`) on every
        server of the keyspace; the merged reply."""
        ...


@dataclass
class SessionState:
    id: int = field(default_factory=lambda: next(_ids))
    resp: int = 2
    user: str | None = None
    name: bytes = b""
    lib_name: bytes = b""
    lib_ver: bytes = b""
    multi: list[tuple[Classified, list[bytes]]] | None = None
    multi_failed: bool = False
    #: WATCHed keys and their fingerprints as WATCH read them (all of one slot).
    watched: dict[bytes, bytes] = field(default_factory=dict)
    watch_slot: int | None = None
    closing: bool = False


class Session:
    def __init__(
        self,
        keyspace: Keyspace,
        table: CommandTable,
        acl: Acl,
        *,
        server_name: str = "redis",
        scripts: Scripts | None = None,
    ) -> None:
        self.keyspace = keyspace
        self.table = table
        self.acl = acl
        #: Script bodies and function libraries: the gateway's, shared by its connections.
        self.scripts = Scripts() if scripts is None else scripts
        self.server_name = server_name
        self.state = SessionState(user=acl.default_user())
        #: Set by :meth:`dispatch` when the connection must answer (and run) nothing more
        #: until the reply it just gave is ready, as Redis does for a blocked client; the
        #: connection clears it.
        self.holds = False

    @property
    def closing(self) -> bool:
        return self.state.closing

    def _reply(self, value: object) -> bytes:
        return encode(value, self.state.resp)

    def _error(self, message: str) -> bytes:
        return encode(Error(message), self.state.resp)

    def route(self, args: list[bytes]) -> Classified | None:
        """The command classified when it goes to the keyspace as it is (the connection may
        batch it with its neighbours of the same slot); None when :meth:`dispatch` must
        answer it (the connection's own commands, transactions, errors, the limits)."""
        st = self.state
        if st.user is None or st.multi is not None:
            return None
        name = args[0].lower()
        if name in _LOCAL or name == b"exec":
            return None
        if name in _SCRIPT_CALLS:
            if name not in (b"eval", b"eval_ro") or len(args) < 3:
                return None  # sent as the EVAL of a kept body (dispatch)
            if self.scripts.as_eval(args)[0].lower() != name:
                return None  # a no-writes EVAL: sent as EVAL_RO (dispatch)
        try:
            request = self.table.classify(args)
        except CommandError:
            return None
        return request if request.kind in _TO_KEYSPACE else None

    def dispatch(self, args: list[bytes]) -> bytes | Awaitable[bytes]:
        """The reply to one request that :meth:`route` did not take; an awaitable of it when
        the keyspace answers (sent before this returns)."""
        name = args[0].lower()
        local = _LOCAL.get(name)
        st = self.state
        if st.user is None and name not in _BEFORE_AUTH:
            return self._error("NOAUTH Authentication required.")
        if st.multi is not None and name not in (b"exec", b"discard", b"multi", b"watch"):
            return self._queue(args)
        if local is not None:
            return local(self, args)
        if is_wide(args):
            return self.keyspace.wide(args, st.resp)
        if name == b"exec":
            return self._exec()
        if name in _SCRIPT_CALLS:
            try:
                args = self.scripts.as_eval(args)
            except ScriptError as e:
                return self._error(e.message)
        try:
            request = self.table.classify(args)
        except CommandError as e:
            return self._error(e.message)
        if request.kind in _TO_KEYSPACE:
            return _first(self.keyspace.batch([(request, args)], st.resp))
        if name in blocking.TIMEOUT_AT and request.slot is not None:
            return self._block(request, args)
        if request.kind is Kind.FANOUT:
            return self._error(
                f"ERR {request.spec.name.upper()} works on the whole keyspace: not served "
                "through the NetMigrate gateway yet"
            )
        return self._error(f"ERR {request.reason}")

    async def execute(self, args: list[bytes]) -> bytes:
        """The reply to one request of this connection."""
        request = self.route(args)
        if request is not None:
            return (await self.keyspace.batch([(request, args)], self.state.resp))[0]
        reply = self.dispatch(args)
        self.holds = False  # one request at a time here: nothing else waits for it
        return reply if isinstance(reply, bytes) else await reply

    # -- transactions --------------------------------------------------------------------

    def _queue(self, args: list[bytes]) -> bytes:
        st = self.state
        try:
            if args[0].lower() in _SCRIPT_CALLS:
                args = self.scripts.as_eval(args)
            request = in_transaction(self.table.classify(args))
        except ScriptError as e:
            st.multi_failed = True
            return self._error(e.message)
        except CommandError as e:
            st.multi_failed = True
            return self._error(e.message)
        if request.kind not in _TO_KEYSPACE:
            st.multi_failed = True
            reason = request.reason or "only commands on keys can run in a transaction here"
            return self._error(f"ERR {reason}")
        assert st.multi is not None
        st.multi.append((request, args))
        return self._reply(Status("QUEUED"))

    def _exec(self) -> bytes | Awaitable[bytes]:
        st = self.state
        if st.multi is None:
            return self._error("ERR EXEC without MULTI")
        queued, failed = st.multi, st.multi_failed
        watched, watch_slot = st.watched, st.watch_slot
        st.multi, st.multi_failed = None, False
        self._unwatch_all()
        if failed:
            return self._error("EXECABORT Transaction discarded because of previous errors.")
        if not queued and not watched:
            return self._reply([])
        # Commands without keys (PING) run wherever the others' slot is.
        slots = {r.slot for r, _ in queued if r.slot is not None}
        if watch_slot is not None:
            slots.add(watch_slot)
        if len(slots) > 1:
            return self._error("CROSSSLOT Keys in request don't hash to the same slot")
        if watched:
            # The watch check runs first in the transaction's own script, at the server that
            # runs it (the migration target, once the keys are pulled): see rediscmd.watch.
            check = check_call(watched)
            queued = [(in_transaction(self.table.classify(check)), check), *queued]
        return self.keyspace.transaction(slots.pop() if slots else 0, queued, st.resp)

    def _multi(self, args: list[bytes]) -> bytes:
        if self.state.multi is not None:
            return self._error("ERR MULTI calls can not be nested")
        self.state.multi = []
        return self._reply(OK)

    def _discard(self, args: list[bytes]) -> bytes:
        if self.state.multi is None:
            return self._error("ERR DISCARD without MULTI")
        self.state.multi, self.state.multi_failed = None, False
        self._unwatch_all()
        return self._reply(OK)

    def _unwatch_all(self) -> None:
        self.state.watched = {}
        self.state.watch_slot = None

    def _unwatch(self, args: list[bytes]) -> bytes:
        if len(args) != 1:
            return self._error("ERR wrong number of arguments for 'unwatch' command")
        self._unwatch_all()
        return self._reply(OK)

    def _watch(self, args: list[bytes]) -> bytes | Awaitable[bytes]:
        st = self.state
        if st.multi is not None:
            return self._error("ERR WATCH inside MULTI is not allowed")
        if len(args) < 2:
            return self._error("ERR wrong number of arguments for 'watch' command")
        keys = list(dict.fromkeys(args[1:]))
        slots = {key_slot(k) for k in keys}
        if st.watch_slot is not None:
            slots.add(st.watch_slot)
        if len(slots) > 1:
            return self._error("CROSSSLOT Keys in request don't hash to the same slot")
        read = fingerprint_call(keys)
        try:
            request = self.table.classify(read)
        except CommandError as e:
            return self._error(e.message)
        # RESP2: the fingerprints parse the same whatever this connection speaks. EXEC needs
        # them, so the connection waits for this read before it runs its next command.
        sent = self.keyspace.batch([(request, read)], 2)
        self.holds = True
        return self._watched(keys, slots.pop(), sent)

    async def _watched(self, keys: list[bytes], slot: int, sent: Awaitable[list[bytes]]) -> bytes:
        st = self.state
        reply = (await sent)[0]
        try:
            fps = ReplyParser.parse(reply)
        except ProtocolError:
            fps = None
        if isinstance(fps, Error) or not isinstance(fps, list) or len(fps) != len(keys):
            # Unread: the keys are watched as changed (EXEC will abort), and the client hears
            # why.
            st.watched.update(dict.fromkeys(keys, UNREAD))
            st.watch_slot = slot
            return reply if reply.startswith(b"-") else self._error("ERR NetMigrate: WATCH failed")
        for key, fp in zip(keys, fps, strict=True):
            # A key watched twice keeps its first fingerprint, as Redis keeps watching it
            # from the first WATCH.
            st.watched.setdefault(key, fp if isinstance(fp, bytes) else UNREAD)
        st.watch_slot = slot
        return self._reply(OK)

    # -- blocking commands ---------------------------------------------------------------

    def _block(self, request: Classified, args: list[bytes]) -> bytes | Awaitable[bytes]:
        try:
            blocking.timeout_of(args)
        except blocking.TimeoutArgError as e:
            return self._error(e.message)
        probe = [b"EXISTS", *blocking.source_keys(args[0].lower(), request)]
        exists = self.table.classify(probe)
        self.holds = True
        return blocking.serve(
            request,
            args,
            self.state.resp,
            self.keyspace.transaction,
            self.keyspace.batch,
            exists,
        )

    # -- the connection's own commands -----------------------------------------------------

    def _hello(self, args: list[bytes]) -> bytes:
        st = self.state
        proto = st.resp
        rest = args[1:]
        if rest:
            try:
                proto = int(rest[0])
            except ValueError:
                return self._error("ERR Protocol version is not an integer or out of range")
            if proto not in (2, 3) or proto not in self.keyspace.protocols:
                # Redis' own answer: the client stays on the protocol it had.
                return self._error("NOPROTO sorry, this protocol version is not supported.")
            rest = rest[1:]
        user = st.user
        while rest:
            opt = rest[0].lower()
            if opt == b"auth" and len(rest) >= 3:
                user = self.acl.check(rest[1].decode(errors="replace"), rest[2])
                if user is None:
                    return self._error(
                        "WRONGPASS invalid username-password pair or user is disabled."
                    )
                rest = rest[3:]
            elif opt == b"setname" and len(rest) >= 2:
                st.name = rest[1]
                rest = rest[2:]
            else:
                return self._error(f"ERR Syntax error in HELLO option '{rest[0].decode()}'")
        if user is None:
            return self._error(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise "
                "the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the "
                "client and select the RESP protocol version at the same time"
            )
        st.user, st.resp = user, proto
        info = {
            "server": self.server_name,
            "version": self.table.redis_version or "7.0.0",
            "proto": proto,
            "id": st.id,
            "mode": "standalone",
            "role": "master",
            "modules": [],
        }
        return self._reply(info)

    def _auth(self, args: list[bytes]) -> bytes:
        if len(args) == 2:
            username, password = "default", args[1]
        elif len(args) == 3:
            username, password = args[1].decode(errors="replace"), args[2]
        else:
            return self._error("ERR wrong number of arguments for 'auth' command")
        user = self.acl.check(username, password)
        if user is None:
            return self._error("WRONGPASS invalid username-password pair or user is disabled.")
        self.state.user = user
        return self._reply(OK)

    def _ping(self, args: list[bytes]) -> bytes:
        if len(args) > 2:
            return self._error("ERR wrong number of arguments for 'ping' command")
        return self._reply(args[1] if len(args) == 2 else Status("PONG"))

    def _echo(self, args: list[bytes]) -> bytes:
        if len(args) != 2:
            return self._error("ERR wrong number of arguments for 'echo' command")
        return self._reply(args[1])

    def _select(self, args: list[bytes]) -> bytes:
        if len(args) != 2:
            return self._error("ERR wrong number of arguments for 'select' command")
        if args[1] != b"0":
            return self._error("ERR DB index is out of range")
        return self._reply(OK)

    def _client(self, args: list[bytes]) -> bytes:
        st = self.state
        sub = args[1].lower() if len(args) > 1 else b""
        if sub == b"setname" and len(args) == 3:
            if b" " in args[2]:
                return self._error(
                    "ERR Client names cannot contain spaces, newlines or special characters."
                )
            st.name = args[2]
            return self._reply(OK)
        if sub == b"getname" and len(args) == 2:
            return self._reply(st.name or None)
        if sub == b"setinfo" and len(args) == 4:
            attr = args[2].lower()
            if attr == b"lib-name":
                st.lib_name = args[3]
            elif attr == b"lib-ver":
                st.lib_ver = args[3]
            else:
                return self._error(f"ERR Unrecognized option '{args[2].decode(errors='replace')}'")
            return self._reply(OK)
        if sub == b"id" and len(args) == 2:
            return self._reply(st.id)
        return self._error(
            "ERR CLIENT "
            + sub.decode(errors="replace").upper()
            + " is not served through the NetMigrate gateway"
        )

    def _command(self, args: list[bytes]) -> bytes:
        sub = args[1].lower() if len(args) > 1 else b""
        if sub == b"count":
            return self._reply(len(self.table))
        if sub in (b"getkeys", b"getkeysandflags") and len(args) > 2:
            try:
                spec = self.table.lookup(args[2:])
                refs = self.table.key_refs(spec, args[2:])
            except CommandError as e:
                return self._error(e.message)
            if sub == b"getkeys":
                return self._reply([args[2 + r.index] for r in refs])
            return self._reply([[args[2 + r.index], sorted(r.flags)] for r in refs])
        return self._error(
            "ERR COMMAND "
            + sub.decode(errors="replace").upper()
            + " is not served through the NetMigrate gateway"
        )

    def _info(self, args: list[bytes]) -> bytes:
        text = (
            "# Server\r\n"
            f"redis_version:{self.table.redis_version or '7.0.0'}\r\n"
            "redis_mode:standalone\r\n"
            "netmigrate_gateway:1\r\n"
            "# Clients\r\n"
            f"client_id:{self.state.id}\r\n"
        )
        return self._reply(text.encode())

    def _script(self, args: list[bytes]) -> bytes:
        try:
            return self._reply(self.scripts.script_command(args))
        except ScriptError as e:
            return self._error(e.message)

    def _function(self, args: list[bytes]) -> bytes | Awaitable[bytes]:
        sub = args[1].lower() if len(args) > 1 else b""
        if sub == b"flush":
            # The servers' own functions too (none come from the gateway: it keeps its own).
            self.scripts.flush_functions()
            return self.keyspace.wide(args, self.state.resp)
        try:
            if sub != b"load":
                return self._reply(self.scripts.function_command(args))
            meta = self.scripts.function_meta(args)
        except ScriptError as e:
            return self._error(e.message)
        # The library's code runs once in the keyspace (Redis' Lua checks it and says what it
        # registers); RESP2 so that the answer parses the same whatever this connection uses.
        probe = [b"EVAL_RO", probe_source(meta.code), b"0"]
        sent = self.keyspace.batch([(self.table.classify(probe), probe)], 2)
        return self._function_loaded(meta, sent)

    async def _function_loaded(self, meta: LibraryMeta, sent: Awaitable[list[bytes]]) -> bytes:
        try:
            return self._reply(self.scripts.function_loaded(meta, (await sent)[0]))
        except ScriptError as e:
            return self._error(e.message)

    def _quit(self, args: list[bytes]) -> bytes:
        self.state.closing = True
        return self._reply(OK)

    def _reset(self, args: list[bytes]) -> bytes:
        st = self.state
        st.resp, st.multi, st.multi_failed, st.name = 2, None, False, b""
        self._unwatch_all()
        st.user = self.acl.default_user()
        return self._reply(Status("RESET"))


_LOCAL = {
    b"hello": Session._hello,
    b"auth": Session._auth,
    b"ping": Session._ping,
    b"echo": Session._echo,
    b"select": Session._select,
    b"client": Session._client,
    b"command": Session._command,
    b"info": Session._info,
    b"quit": Session._quit,
    b"reset": Session._reset,
    b"multi": Session._multi,
    b"discard": Session._discard,
    b"watch": Session._watch,
    b"unwatch": Session._unwatch,
    b"script": Session._script,
    b"function": Session._function,
}
#: What a connection may send before it authenticated (as Redis allows).
_BEFORE_AUTH = frozenset({b"auth", b"hello", b"quit", b"reset"})
