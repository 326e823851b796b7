"""Scripts and functions at the gateway: the bodies it has seen, and the EVAL each call is sent as.

The server that runs a script is whichever serves its keys' slot, and that changes while the slot
migrates, so the gateway keeps the bodies (``SCRIPT LOAD``, and every ``EVAL``, as Redis caches
them) and sends ``EVALSHA`` as ``EVAL`` of the body; the agent runs the body inside its request
script (``agent.generic``). An unknown SHA1 gets Redis' own ``NOSCRIPT``.

Functions: ``FUNCTION LOAD`` keeps the library here, after the keyspace ran its code once (a
keyless ``EVAL_RO`` that registers nothing, so the code is checked by Redis' own Lua and the
names and flags of its functions are what it registered). ``FCALL`` is sent as ``EVAL`` of a
script that runs the library's code and calls the function with its keys and arguments, as
Redis does. Libraries live in this gateway process: another gateway, or this one restarted, has
its own (docs/compatibility.md).
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from netmigrate.rediscmd.resp import OK, Error, ReplyParser, RespSet

#: EVAL bodies kept at most (the oldest go first), as Redis 7.4 bounds its EVAL cache; bodies of
#: SCRIPT LOAD stay until SCRIPT FLUSH.
MAX_EVAL_BODIES = 500

NOSCRIPT = "NOSCRIPT No matching script. Please use EVAL."
NOTBUSY = "NOTBUSY No scripts in execution right now."
_NAME = re.compile(rb"^[A-Za-z0-9_]+$")
_FUNCTION_FLAGS = frozenset({"no-writes", "allow-oom", "allow-stale", "no-cluster"})


class ScriptError(Exception):
    """A script command answered with an error (``message`` is the reply's text)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def sha1_hex(body: bytes) -> bytes:
    return hashlib.sha1(body).hexdigest().encode()


@dataclass(frozen=True)
class Function:
    name: bytes
    flags: tuple[str, ...]


@dataclass(frozen=True)
class Library:
    name: bytes
    code: bytes  # as loaded, the shebang included
    functions: tuple[Function, ...]


@dataclass(frozen=True)
class LibraryMeta:
    """What ``FUNCTION LOAD`` reads from the shebang before any Lua runs."""

    name: bytes
    code: bytes
    replace: bool


@dataclass
class Scripts:
    """The script bodies and function libraries of one gateway (every connection's)."""

    _loaded: dict[bytes, bytes] = field(default_factory=dict)
    _evaluated: OrderedDict[bytes, bytes] = field(default_factory=OrderedDict)
    _libraries: dict[bytes, Library] = field(default_factory=dict)
    _functions: dict[bytes, Library] = field(default_factory=dict)

    # -- scripts -------------------------------------------------------------------------

    def remember(self, body: bytes) -> bytes:
        """Keep an EVAL body; its SHA1."""
        sha = sha1_hex(body)
        if sha not in self._loaded:
            self._evaluated[sha] = body
            self._evaluated.move_to_end(sha)
            while len(self._evaluated) > MAX_EVAL_BODIES:
                self._evaluated.popitem(last=False)
        return sha

    def body(self, sha: bytes) -> bytes | None:
        sha = sha.lower()
        found = self._loaded.get(sha)
        if found is None:
            found = self._evaluated.get(sha)
        return found

    def script_command(self, args: Sequence[bytes]) -> object:
        """SCRIPT LOAD / EXISTS / FLUSH / KILL: the reply value (raises ScriptError)."""
        sub = args[1].lower() if len(args) > 1 else b""
        if sub == b"load" and len(args) == 3:
            sha = sha1_hex(args[2])
            self._loaded[sha] = args[2]
            self._evaluated.pop(sha, None)
            return sha
        if sub == b"exists" and len(args) >= 3:
            return [int(self.body(s) is not None) for s in args[2:]]
        if sub == b"flush" and len(args) <= 3:
            if len(args) == 3 and args[2].lower() not in (b"async", b"sync"):
                raise ScriptError("ERR SCRIPT FLUSH only support SYNC|ASYNC option")
            self._loaded.clear()
            self._evaluated.clear()
            return OK
        if sub == b"kill" and len(args) == 2:
            raise ScriptError(NOTBUSY)
        if sub in (b"load", b"exists", b"flush", b"kill"):
            raise ScriptError(f"ERR wrong number of arguments for 'script|{sub.decode()}' command")
        raise ScriptError(
            f"ERR SCRIPT {args[1].decode(errors='replace').upper() if len(args) > 1 else ''} "
            "is not served through the NetMigrate gateway"
        )

    # -- what a call is sent as ----------------------------------------------------------

    def as_eval(self, args: Sequence[bytes]) -> list[bytes]:
        """EVAL / EVAL_RO (remembered), EVALSHA / EVALSHA_RO and FCALL / FCALL_RO in the form
        the keyspace runs: ``EVAL[_RO] body numkeys key... arg...`` (raises ScriptError)."""
        name = args[0].lower()
        ro = name.endswith(b"_ro")
        verb = b"EVAL_RO" if ro else b"EVAL"
        if len(args) < 3:
            raise ScriptError(
                f"ERR wrong number of arguments for '{name.decode(errors='replace')}' command"
            )
        # A script that says it does not write is a read: double-read during a migration
        # (and the agent's read script refuses a write, as Redis does for the flag).
        if name in (b"eval", b"eval_ro"):
            self.remember(args[1])
            return [b"EVAL_RO" if no_writes(args[1]) else verb, *args[1:]]
        if name in (b"evalsha", b"evalsha_ro"):
            found = self.body(args[1]) if len(args[1]) == 40 else None
            if found is None:
                raise ScriptError(NOSCRIPT)
            return [b"EVAL_RO" if no_writes(found) else verb, found, *args[2:]]
        library = self._functions.get(args[1])
        if library is None:
            raise ScriptError("ERR Function not found")
        function = next(f for f in library.functions if f.name == args[1])
        if "no-writes" in function.flags:
            verb = b"EVAL_RO"
        elif ro:
            raise ScriptError("ERR Can not execute a script with write flag using *_ro command.")
        return [verb, call_source(library.code, args[1]), *args[2:]]

    # -- functions -----------------------------------------------------------------------

    def function_meta(self, args: Sequence[bytes]) -> LibraryMeta:
        """FUNCTION LOAD [REPLACE] code: its library's name from the shebang, checked as
        Redis checks it before running any Lua (raises ScriptError)."""
        rest = list(args[2:])
        replace = False
        if len(rest) == 2 and rest[0].lower() == b"replace":
            replace, rest = True, rest[1:]
        if len(rest) != 1:
            raise ScriptError("ERR Unknown option given: " + _text(rest[0] if rest else b""))
        code = rest[0]
        if not code.startswith(b"#!"):
            raise ScriptError("ERR Missing library metadata")
        first = code[2:].split(b"\n", 1)[0].rstrip(b"\r").split(b" ")
        if first[0].lower() != b"lua":
            raise ScriptError(f"ERR Engine '{_text(first[0])}' not found")
        name = b""
        for part in first[1:]:
            if not part:
                continue
            if not part.startswith(b"name="):
                raise ScriptError(f"ERR Invalid metadata value given: {_text(part)}")
            name = part[len(b"name=") :]
        if not name:
            raise ScriptError("ERR Library name was not given")
        if not _NAME.match(name):
            raise ScriptError(
                "ERR Library names can only contain letters, numbers, or underscores(_) and "
                "must be at least one character long"
            )
        if name in self._libraries and not replace:
            raise ScriptError(f"ERR Library '{_text(name)}' already exists")
        return LibraryMeta(name, code, replace)

    def function_loaded(self, meta: LibraryMeta, probe_reply: bytes) -> bytes:
        """Keep the library whose code the keyspace ran (:func:`probe_source`); its name, or
        ScriptError with what Redis' Lua said."""
        value = ReplyParser.parse(probe_reply)
        if isinstance(value, Error):
            raise ScriptError(value.message)
        if not isinstance(value, list) or not all(
            isinstance(e, list) and e and all(isinstance(x, bytes) for x in e) for e in value
        ):
            raise ScriptError(f"ERR NetMigrate: unexpected answer to a library's load: {value!r}")
        functions = []
        for entry in value:
            name, flags = entry[0], tuple(f.decode() for f in entry[1:])
            if not _NAME.match(name):
                raise ScriptError(
                    "ERR Function names can only contain letters, numbers, or underscores(_) "
                    "and must be at least one character long"
                )
            bad = [f for f in flags if f not in _FUNCTION_FLAGS]
            if bad:
                raise ScriptError(f"ERR Unknown flag given: {bad[0]}")
            functions.append(Function(name, flags))
        if not functions:
            raise ScriptError("ERR No functions registered")
        replaced = self._libraries.get(meta.name) if meta.replace else None
        for f in functions:
            other = self._functions.get(f.name)
            if other is not None and other is not replaced:
                raise ScriptError(f"ERR Function {_text(f.name)} already exists")
        if meta.name in self._libraries and not meta.replace:
            # Loaded by another connection while this one's code ran.
            raise ScriptError(f"ERR Library '{_text(meta.name)}' already exists")
        if replaced is not None:
            self._drop(replaced)
        library = Library(meta.name, meta.code, tuple(functions))
        self._libraries[meta.name] = library
        for f in functions:
            self._functions[f.name] = library
        return meta.name

    def function_command(self, args: Sequence[bytes]) -> object:
        """FUNCTION LIST / DELETE / KILL (LOAD and FLUSH: the session); the reply value."""
        sub = args[1].lower() if len(args) > 1 else b""
        if sub == b"delete" and len(args) == 3:
            library = self._libraries.get(args[2])
            if library is None:
                raise ScriptError("ERR Library not found")
            self._drop(library)
            return OK
        if sub == b"list":
            return self._list(args[2:])
        if sub == b"kill" and len(args) == 2:
            raise ScriptError(NOTBUSY)
        raise ScriptError(
            f"ERR FUNCTION {_text(args[1]).upper() if len(args) > 1 else ''} "
            "is not served through the NetMigrate gateway"
        )

    def flush_functions(self) -> None:
        self._libraries.clear()
        self._functions.clear()

    def _drop(self, library: Library) -> None:
        del self._libraries[library.name]
        for f in library.functions:
            self._functions.pop(f.name, None)

    def _list(self, options: Sequence[bytes]) -> object:
        pattern: bytes | None = None
        with_code = False
        i = 0
        while i < len(options):
            opt = options[i].lower()
            if opt == b"withcode":
                with_code = True
                i += 1
            elif opt == b"libraryname" and i + 1 < len(options):
                pattern = options[i + 1]
                i += 2
            else:
                raise ScriptError(f"ERR Unknown argument {_text(options[i])}")
        out = []
        for library in self._libraries.values():
            if pattern is not None and not _glob(pattern, library.name):
                continue
            entry: dict[bytes, object] = {
                b"library_name": library.name,
                b"engine": b"LUA",
                b"functions": [
                    {b"name": f.name, b"description": None, b"flags": RespSet(list(f.flags))}
                    for f in library.functions
                ],
            }
            if with_code:
                entry[b"library_code"] = library.code
            out.append(entry)
        return out


def no_writes(body: bytes) -> bool:
    """Whether a script's shebang has the ``no-writes`` flag (``#!lua flags=no-writes,...``)."""
    if not body.startswith(b"#!lua"):
        return False
    for part in body.split(b"\n", 1)[0].split()[1:]:
        if part.startswith(b"flags=") and b"no-writes" in part[len(b"flags=") :].split(b","):
            return True
    return False


def _text(b: bytes) -> str:
    return b.decode(errors="replace")


def _glob(pattern: bytes, name: bytes) -> bool:
    return fnmatch.fnmatchcase(name.decode(errors="replace"), pattern.decode(errors="replace"))


def lua_string(value: bytes) -> bytes:
    """A Lua string literal of ``value`` (every byte outside a safe set as ``\\ddd``)."""
    out = bytearray(b'"')
    for byte in value:
        ch = bytes((byte,))
        if ch.isalnum() or ch in b" _-.:":
            out += ch
        else:
            out += b"\\%d" % byte
    out += b'"'
    return bytes(out)


def _library_chunk(code: bytes) -> bytes:
    """Lua running a library's code with a ``redis.register_function`` that keeps what it
    registers in ``__nm_fns`` (name -> {callback, flags}) and ``__nm_order``."""
    # The shebang is not Lua; its newline stays so the code's line numbers are kept.
    body = code[code.index(b"\n") :] if b"\n" in code else b""
    return (
        b"local __nm_fns, __nm_order, __nm_redis = {}, {}, redis\n"
        b"redis = setmetatable({register_function = function(a, b)\n"
        b"  local name, callback, flags = a, b, {}\n"
        b"  if type(a) == 'table' then\n"
        b"    name, callback, flags = a.function_name, a.callback, a.flags or {}\n"
        b"  end\n"
        b"  if type(name) ~= 'string' then\n"
        b"    error({err = 'ERR function name must be a string'})\n"
        b"  end\n"
        b"  if type(callback) ~= 'function' then\n"
        b"    error({err = 'ERR callback must be a function'})\n"
        b"  end\n"
        b"  if __nm_fns[name] then\n"
        b"    error({err = 'ERR Function already exists in the library'})\n"
        b"  end\n"
        b"  __nm_fns[name] = {callback, flags}\n"
        b"  __nm_order[#__nm_order + 1] = name\n"
        b"end}, {__index = __nm_redis})\n"
        b"do" + body + b"\nend\n"
        b"redis = __nm_redis\n"
    )


def probe_source(code: bytes) -> bytes:
    """A keyless script that runs a library's code and answers what it registered: per
    function ``{name, flag...}``."""
    return _library_chunk(code) + (
        b"local out = {}\n"
        b"for i, name in ipairs(__nm_order) do\n"
        b"  local entry = {name}\n"
        b"  for _, f in ipairs(__nm_fns[name][2]) do entry[#entry + 1] = f end\n"
        b"  out[i] = entry\n"
        b"end\n"
        b"return out\n"
    )


def call_source(code: bytes, function: bytes) -> bytes:
    """A script that runs a library's code and calls ``function`` with KEYS and ARGV, as
    FCALL calls it (``keys``, ``args``)."""
    return _library_chunk(code) + (
        b"local __nm_f = __nm_fns[" + lua_string(function) + b"]\n"
        b"if not __nm_f then return redis.error_reply('ERR Function not found') end\n"
        b"return __nm_f[1](KEYS, ARGV)\n"
    )
