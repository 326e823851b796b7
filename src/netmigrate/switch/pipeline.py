"""The NetMigrate pipeline in Python: the lab switch's twin of ``p4/netmigrate.p4``.

:func:`process` is ingress + egress of ``docs/pipeline.md`` for one frame. It is a pure function
of the frame, its ingress port and a :class:`~netmigrate.switch.interfaces.PipelineState`
(tables, slot_map, counters, clone sessions, digests), and it mirrors the P4 program decision for
decision, including BMv2's own behaviour where the program relies on it:

- a frame too short for a header leaves that header invalid and the rest as payload;
- an ingress-to-egress clone is built from the frame as it *entered* ingress (BMv2 re-parses
  it), so the double-read copy gets its TTL decrement and flags in egress;
- counters count the frame's length at ingress, including a ``packet_out`` header;
- egress port 511 (``mark_to_drop``) means no output.

The runtime calls, per frame received on a data port or sent by the controller:

- ``process(frame, port, state)`` for a frame received on ``port``. A frame from
  ``state.cpu_port`` must start with the two-byte ``packet_out`` header.
- ``process_packet_out(payload, metadata, state)`` for a P4Runtime ``PacketOut``: ``payload``
  without the header and ``metadata`` its fields by P4Info name. Same result as ``process``
  with the header encoded in front, without building it.

Outputs to ``state.cpu_port`` are packet-ins: their ``frame`` has no ``packet_in`` header and
their ``metadata`` holds ``ingress_port`` and ``reason`` for the P4Runtime ``PacketIn``.

The code is written for the lab switch's 100k packets/s on one core: fixed offsets, byte
indexing and ``int.from_bytes``, ints precomputed from the protocol enums, no objects per
header, and only the state calls the P4 program makes on the packet's path.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from types import MappingProxyType

from netmigrate.protocol.constants import (
    CONTROL,
    CONTROL_LEN,
    HEADER_LEN,
    NO_EPOCH,
    PACKET_IN_REASON_SLOT_MAP,
    READ_OPS,
    REPLY_BIT,
    SERVICE_PORT_BASE,
    SERVICE_PORT_MASK,
    SLOT_COUNT,
    SLOT_MAP_SIZE,
    WRITE_OPS,
    Decision,
    Flag,
    Op,
)
from netmigrate.protocol.layout import (
    NM_CONTROL_EPOCH,
    NM_FLAGS,
    NM_OP,
    NM_SLOT,
    NM_SOURCE_ID,
    NM_TARGET_ID,
    PACKET_OUT_LEN,
)
from netmigrate.switch.interfaces import Output, PipelineState
from netmigrate.switch.packet import (
    DROP_PORT,
    ETH_LEN,
    ETHERTYPE_IPV4,
    IP_CSUM,
    IP_DST,
    IP_FLAGS_FRAG,
    IP_FRAG_MASK,
    IP_PROTO,
    IP_SRC,
    IP_TTL,
    IPPROTO_UDP,
    IPV4_IHL_NO_OPTIONS,
    IPV4_LEN,
    UDP_CSUM,
    UDP_DPORT,
    UDP_LEN,
    ipv4_checksum_adjust,
    ipv4_checksum_after_ttl_decrement,
)

__all__ = ["P4INFO_NAMES", "process", "process_packet_out"]

# --- P4Info names (the state is addressed by them) ----------------------------------------------

_IN = "NetMigrateIngress."
_EG = "NetMigrateEgress."
T_IPV4_LPM = _IN + "ipv4_lpm"
T_KEYSPACE = _IN + "keyspace"
T_SERVER_PORT = _IN + "server_port"
T_SENDER_CHECK = _IN + "sender_check"
T_SERVER_REWRITE = _EG + "server_rewrite"
A_IPV4_FORWARD = _IN + "ipv4_forward"
A_SET_KEYSPACE = _IN + "set_keyspace"
A_SET_SERVER_PORT = _IN + "set_server_port"
A_SENDER_VERIFIED = _IN + "sender_verified"
A_REWRITE_TO_SERVER = _EG + "rewrite_to_server"
R_SLOT_MAP = _IN + "slot_map"
R_SLOT_EPOCH = _IN + "slot_epoch"
C_OP = _IN + "op_counter"
C_DECISION = _IN + "decision_counter"
D_SLOT_TRANSITION = "slot_transition_t"
K_IPV4_DST = "hdr.ipv4.dstAddr"
K_IPV4_SRC = "hdr.ipv4.srcAddr"
K_UDP_DST = "hdr.udp.dstPort"
K_NM_SOURCE = "hdr.nm.source_id"
K_INGRESS_PORT = "standard_metadata.ingress_port"
K_DEST_SERVER = "meta.dest_server"
K_EGRESS_SERVER = "meta.egress_server"

#: Every P4Info name the pipeline uses (a test checks each against the committed P4Info).
P4INFO_NAMES = {
    "tables": (T_IPV4_LPM, T_KEYSPACE, T_SERVER_PORT, T_SENDER_CHECK, T_SERVER_REWRITE),
    "actions": (
        A_IPV4_FORWARD,
        A_SET_KEYSPACE,
        A_SET_SERVER_PORT,
        A_SENDER_VERIFIED,
        A_REWRITE_TO_SERVER,
    ),
    "registers": (R_SLOT_MAP, R_SLOT_EPOCH),
    "counters": (C_OP, C_DECISION),
    "digests": (D_SLOT_TRANSITION,),
    "match_fields": {
        T_IPV4_LPM: (K_IPV4_DST,),
        T_KEYSPACE: (K_IPV4_DST, K_UDP_DST),
        T_SERVER_PORT: (K_DEST_SERVER,),
        T_SENDER_CHECK: (K_NM_SOURCE, K_INGRESS_PORT, K_IPV4_SRC),
        T_SERVER_REWRITE: (K_EGRESS_SERVER,),
    },
    "params": {
        A_IPV4_FORWARD: ("dst_mac", "port"),
        A_SET_KEYSPACE: ("keyspace_id", "default_owner", "slot_base"),
        A_SET_SERVER_PORT: ("port",),
        A_REWRITE_TO_SERVER: ("dst_mac", "dst_ip", "udp_port"),
    },
}

# --- Plain ints of the protocol enums (no enum lookups per packet) ------------------------------

_D_PLAIN_FORWARD = int(Decision.PLAIN_FORWARD)
_D_TO_OWNER = int(Decision.TO_OWNER)
_D_REDIRECTED = int(Decision.REDIRECTED)
_D_DOUBLE_READ = int(Decision.DOUBLE_READ)
_D_ACCEPTED = int(Decision.TRANSITION_ACCEPTED)
_D_REJECTED = int(Decision.TRANSITION_REJECTED)
_D_STALE = int(Decision.TRANSITION_STALE)
_D_CPU_OP = int(Decision.CPU_OP)
_D_CPU_OP_REJECTED = int(Decision.CPU_OP_REJECTED)
_D_NO_SERVER = int(Decision.NO_SERVER)
_D_NO_ROUTE = int(Decision.NO_ROUTE)
_D_BAD_SLOT = int(Decision.BAD_SLOT)
_D_BAD_CHECKSUM = int(Decision.BAD_CHECKSUM)

_DOUBLE_READ = int(Flag.DOUBLE_READ)
_TO_TARGET = int(Flag.TO_TARGET)
_CLONE_FLAGS = _DOUBLE_READ | _TO_TARGET
_KEEP_FLAGS = 0xFF & ~_CLONE_FLAGS
_OP_SLOT_SET = int(Op.SLOT_SET)
_OP_SLOT_START = int(Op.SLOT_START)

# What the pipeline does with a request op, one tuple index per packet (the order matters:
# kinds from _START up are transitions). Replies and ops the
# switch does not know stay 0 (plain IPv4).
_PLAIN, _READ, _WRITE, _START, _COMPLETE, _CPU = range(6)
_kinds = [_PLAIN] * 256
for _op in READ_OPS:
    _kinds[_op] = _READ
for _op in WRITE_OPS:
    _kinds[_op] = _WRITE
_kinds[Op.SLOT_START] = _START
_kinds[Op.SLOT_COMPLETE] = _COMPLETE
_kinds[Op.SLOT_SET] = _CPU
_kinds[Op.SLOT_READ] = _CPU
for _op in range(256):
    if _op & REPLY_BIT:
        _kinds[_op] = _PLAIN
_OP_KIND = tuple(_kinds)
del _kinds, _op

# --- Offsets in a frame that starts with Ethernet -----------------------------------------------

_ET_HI, _ET_LO = ETHERTYPE_IPV4 >> 8, ETHERTYPE_IPV4 & 0xFF
_IP = ETH_LEN
_IP_END = _IP + IPV4_LEN
_TTL = _IP + IP_TTL
_PROTO = _IP + IP_PROTO
_CSUM = _IP + IP_CSUM
_SRC = _IP + IP_SRC
_DST = _IP + IP_DST
_FRAG = _IP + IP_FLAGS_FRAG
_UDP = _IP_END  # UDP is only parsed behind an IPv4 header without options
_UDP_DPORT = _UDP + UDP_DPORT
_UDP_CSUM = _UDP + UDP_CSUM
_NM = _UDP + UDP_LEN
_NM_OP = _NM + NM_OP
_NM_FLAGS = _NM + NM_FLAGS
_NM_SLOT = _NM + NM_SLOT
_NM_SRC = _NM + NM_SOURCE_ID
_NM_TGT = _NM + NM_TARGET_ID
_NM_END = _NM + HEADER_LEN
# nm_control: parsed after the header of a control request only.
_EPOCH = _NM_END + NM_CONTROL_EPOCH
_CONTROL_END = _NM_END + CONTROL_LEN

_NO_METADATA: Mapping[str, int] = MappingProxyType({})


def _struct_at(start: int, fields: list[tuple[int, str]]) -> struct.Struct:
    """A struct that reads ``fields`` ((offset, code), ascending) from ``start``, skipping gaps."""
    fmt, pos = "!", start
    for offset, code in fields:
        if offset < pos:
            raise ValueError("overlapping fields")
        if offset > pos:
            fmt += f"{offset - pos}x"
        fmt += code
        pos = offset + struct.calcsize("!" + code)
    return struct.Struct(fmt)


#: Every field ingress reads from a frame long enough for the NetMigrate header, in one call:
#: ethertype, version+IHL, flags+fragment offset, TTL, protocol, checksum, IPv4 destination,
#: UDP destination port, nm op, nm flags, nm slot.
_HOT = _struct_at(
    12,
    [
        (12, "H"),
        (_IP, "B"),
        (_FRAG, "H"),
        (_TTL, "B"),
        (_PROTO, "B"),
        (_CSUM, "H"),
        (_DST, "I"),
        (_UDP_DPORT, "H"),
        (_NM_OP, "B"),
        (_NM_FLAGS, "B"),
        (_NM_SLOT, "H"),
    ],
)
_TTL_PROTO_CSUM = struct.Struct("!BBH")  # contiguous in the IPv4 header, from _TTL
_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")
_CONTROL_AT = CONTROL  # the epoch, at _EPOCH


def process(frame: bytes, ingress_port: int, state: PipelineState) -> list[Output]:
    """Run one frame received on ``ingress_port`` through ingress and egress.

    A frame from ``state.cpu_port`` starts with the ``packet_out`` header.
    """
    if ingress_port == state.cpu_port:
        if len(frame) < PACKET_OUT_LEN:
            return []  # no packet_out, nothing after it: not IPv4
        v = (frame[0] << 8) | frame[1]
        if not (v >> 6) & 1:
            return _direct(frame[PACKET_OUT_LEN:], v >> 7, state.cpu_port)
        return _ingress(frame[PACKET_OUT_LEN:], ingress_port, len(frame), state)
    return _ingress(frame, ingress_port, len(frame), state)


def process_packet_out(
    payload: bytes, metadata: Mapping[str, int], state: PipelineState
) -> list[Output]:
    """Run one P4Runtime ``PacketOut`` (payload without the header, its metadata by name).

    Missing metadata fields are 0, as in a ``packet_out`` header the controller left zero.
    """
    egress_port = metadata.get("egress_port", 0)
    submit = metadata.get("submit_to_ingress", 0)
    if not 0 <= egress_port < 1 << 9:
        raise ValueError(f"packet_out egress_port {egress_port} does not fit in 9 bits")
    if submit not in (0, 1):
        raise ValueError(f"packet_out submit_to_ingress must be 0 or 1, not {submit}")
    if not submit:
        return _direct(payload, egress_port, state.cpu_port)
    return _ingress(payload, state.cpu_port, len(payload) + PACKET_OUT_LEN, state)


def _direct(payload: bytes, port: int, cpu_port: int) -> list[Output]:
    """Ingress step 1: a packet-out not submitted to ingress leaves unchanged."""
    if port == DROP_PORT:
        return []
    if port == cpu_port:
        return [Output(port, bytes(payload), {"ingress_port": cpu_port, "reason": 0})]
    return [Output(port, bytes(payload), _NO_METADATA)]


def _ingress(frame: bytes, in_port: int, nbytes: int, state: PipelineState) -> list[Output]:
    """Ingress steps 2-9 and egress, for a frame that starts with Ethernet."""
    if len(frame) < _NM_END:
        return _short(frame, in_port, nbytes, state)
    et, vihl, frag, ttl, proto, csum, dst, dport, op, flags, slot = _HOT.unpack_from(frame, 12)
    # 2. Not IPv4 -> drop. Nor is an IHL-5 header that verify_checksum rejects.
    if et != ETHERTYPE_IPV4:
        return []
    if vihl & 0x0F != IPV4_IHL_NO_OPTIONS:
        return _plain(frame, in_port, nbytes, state, False, ttl, proto, csum, dst)
    if int.from_bytes(frame[_IP:_IP_END], "big") % 0xFFFF or csum == 0xFFFF:
        state.counter_add(C_DECISION, _D_BAD_CHECKSUM, nbytes)
        return []
    if (
        proto != IPPROTO_UDP
        or frag & IP_FRAG_MASK
        or dport & SERVICE_PORT_MASK != SERVICE_PORT_BASE
    ):
        return _plain(frame, in_port, nbytes, state, True, ttl, proto, csum, dst)

    # 3. Count the op, look the keyspace up. 4. Replies and ops the switch does not know go the
    # plain way whatever the keyspace says, so they skip the lookup (it has no side effect).
    state.counter_add(C_OP, op, nbytes)
    kind = _OP_KIND[op]
    if not kind:
        return _plain(frame, in_port, nbytes, state, True, ttl, proto, csum, dst)
    call = state.table_lookup(T_KEYSPACE, {K_IPV4_DST: dst, K_UDP_DST: dport})
    if call.action != A_SET_KEYSPACE:
        return _plain(frame, in_port, nbytes, state, True, ttl, proto, csum, dst)
    ks = call.params

    # 5. The slot's slot_map entry; the register is never touched out of range.
    index = ks["slot_base"] + slot
    if slot < SLOT_COUNT and index < SLOT_MAP_SIZE:
        entry = state.register_read(R_SLOT_MAP, index)
        owner_raw = entry >> 8
        target = entry & 0xFF
        owner = owner_raw or ks["default_owner"]
        slot_ok = True
    else:
        owner_raw = target = 0
        owner = ks["default_owner"]
        slot_ok = False

    if kind == _CPU:
        return _cpu_op(frame, in_port, nbytes, state, op, slot_ok, index, owner_raw, target)
    if kind >= _START:  # SLOT_START or SLOT_COMPLETE
        # Only control ops read slot_epoch: data requests never pay for it.
        return _transition(
            frame,
            in_port,
            nbytes,
            state,
            op,
            kind,
            ks,
            slot,
            slot_ok,
            index,
            owner_raw,
            owner,
            target,
            ttl,
            proto,
            csum,
            dst,
            flags,
        )

    # 6. Data ops. DOUBLE_READ and TO_TARGET are the switch's word: a client cannot set them.
    flags &= _KEEP_FLAGS
    double_read = False
    if not target:
        dest = owner
        decision = _D_TO_OWNER if slot_ok else _D_BAD_SLOT
    elif kind == _WRITE:
        dest = target
        flags |= _TO_TARGET
        decision = _D_REDIRECTED
    else:
        dest = owner
        flags |= _DOUBLE_READ
        decision = _D_DOUBLE_READ
        double_read = True
    # 7. Steered requests need a known destination server.
    call = state.table_lookup(T_SERVER_PORT, {K_DEST_SERVER: dest})
    if call.action != A_SET_SERVER_PORT:
        state.counter_add(C_DECISION, _D_NO_SERVER, nbytes)
        return []
    state.counter_add(C_DECISION, decision, nbytes)
    port = call.params["port"]
    cpu_port = state.cpu_port
    if not double_read:
        if port == DROP_PORT:
            return []
        out = _steered(frame, state, dest, flags, ttl, proto, csum, dst)
        if port == cpu_port:
            return [Output(port, out, {"ingress_port": in_port, "reason": 0})]
        return [Output(port, out, _NO_METADATA)]

    # Double read: BMv2 enqueues the clone (one per replica of session `target`) before the
    # original leaves ingress; the clone starts from the frame as received.
    outputs: list[Output] = []
    replicas = state.clone_session(target)
    if replicas:
        clone = _steered(frame, state, target, flags | _TO_TARGET, ttl, proto, csum, dst)
        for replica_port, _instance in replicas:
            if replica_port != DROP_PORT:
                outputs.append(_output(replica_port, clone, in_port, 0, cpu_port))
    if port != DROP_PORT:
        out = _steered(frame, state, dest, flags, ttl, proto, csum, dst)
        outputs.append(_output(port, out, in_port, 0, cpu_port))
    return outputs


def _short(frame: bytes, in_port: int, nbytes: int, state: PipelineState) -> list[Output]:
    """A frame too short for the NetMigrate header: drop it or forward it as plain IPv4."""
    if len(frame) < _IP_END or frame[12] != _ET_HI or frame[13] != _ET_LO:
        return []
    ttl, proto, csum = _TTL_PROTO_CSUM.unpack_from(frame, _TTL)
    dst = _U32.unpack_from(frame, _DST)[0]
    if frame[_IP] & 0x0F != IPV4_IHL_NO_OPTIONS:
        return _plain(frame, in_port, nbytes, state, False, ttl, proto, csum, dst)
    if int.from_bytes(frame[_IP:_IP_END], "big") % 0xFFFF or csum == 0xFFFF:
        state.counter_add(C_DECISION, _D_BAD_CHECKSUM, nbytes)
        return []
    return _plain(frame, in_port, nbytes, state, True, ttl, proto, csum, dst)


def _plain(
    frame: bytes,
    in_port: int,
    nbytes: int,
    state: PipelineState,
    verified: bool,
    ttl: int,
    proto: int,
    csum: int,
    dst: int,
) -> list[Output]:
    """8. Plain IPv4: ipv4_lpm, destination MAC, TTL.

    ``verified``: the header has no options and its checksum verified, so the new checksum
    follows from the TTL change alone; else it is updated as the P4 program does (RFC 1624).
    """
    call = state.table_lookup(T_IPV4_LPM, {K_IPV4_DST: dst})
    if call.action != A_IPV4_FORWARD:
        state.counter_add(C_DECISION, _D_NO_ROUTE, nbytes)
        return []
    state.counter_add(C_DECISION, _D_PLAIN_FORWARD, nbytes)
    params = call.params
    port = params["port"]
    if port == DROP_PORT:
        return []
    new_ttl = (ttl - 1) & 0xFF
    if verified:
        csum = ipv4_checksum_adjust(csum, (new_ttl - ttl) << 8)
    else:
        csum = ipv4_checksum_after_ttl_decrement(csum, ttl, proto)
    buf = bytearray(frame)
    buf[0:6] = params["dst_mac"].to_bytes(6, "big")
    _TTL_PROTO_CSUM.pack_into(buf, _TTL, new_ttl, proto, csum)
    return [_output(port, bytes(buf), in_port, 0, state.cpu_port)]


def _cpu_op(
    frame: bytes,
    in_port: int,
    nbytes: int,
    state: PipelineState,
    op: int,
    slot_ok: bool,
    index: int,
    owner_raw: int,
    target: int,
) -> list[Output]:
    """SLOT_SET / SLOT_READ: only from the CPU port and with the control body (the epoch),
    answered with a packet-in."""
    cpu_port = state.cpu_port
    if in_port != cpu_port or len(frame) < _CONTROL_END:
        state.counter_add(C_DECISION, _D_CPU_OP_REJECTED, nbytes)
        return []
    if not slot_ok:
        state.counter_add(C_DECISION, _D_BAD_SLOT, nbytes)
        return []
    epoch = state.register_read(R_SLOT_EPOCH, index)
    if op == _OP_SLOT_SET:
        owner_raw = frame[_NM_SRC]
        target = frame[_NM_TGT]
        state.register_write(R_SLOT_MAP, index, (owner_raw << 8) | target)
        # Epochs never go back (docs/pipeline.md).
        wanted = _CONTROL_AT.unpack_from(frame, _EPOCH)[0]
        if wanted > epoch:
            state.register_write(R_SLOT_EPOCH, index, wanted)
            epoch = wanted
    state.counter_add(C_DECISION, _D_CPU_OP, nbytes)
    buf = bytearray(frame)
    buf[_NM_OP] = op | REPLY_BIT
    buf[_NM_SRC] = owner_raw
    buf[_NM_TGT] = target
    _CONTROL_AT.pack_into(buf, _EPOCH, epoch)
    buf[_UDP_CSUM] = buf[_UDP_CSUM + 1] = 0
    # The IPv4 header is unchanged and verified: its recomputed checksum is the same.
    meta = {"ingress_port": in_port, "reason": PACKET_IN_REASON_SLOT_MAP}
    return [Output(cpu_port, bytes(buf), meta)]


def _transition(
    frame: bytes,
    in_port: int,
    nbytes: int,
    state: PipelineState,
    op: int,
    kind: int,
    ks: Mapping[str, int],
    slot: int,
    slot_ok: bool,
    index: int,
    owner_raw: int,
    owner: int,
    target: int,
    ttl: int,
    proto: int,
    csum: int,
    dst: int,
    flags: int,
) -> list[Output]:
    """SLOT_START / SLOT_COMPLETE: only from the slot's owner, naming a known server, with the
    epoch of the slot's migration (a new START: above the slot's epoch; a resent START, a
    COMPLETE: equal to it, or any when the switch has none). One that fails only the epoch
    check is stale."""
    src = frame[_NM_SRC]
    tgt = frame[_NM_TGT]
    sender = state.table_lookup(
        T_SENDER_CHECK,
        {
            K_NM_SOURCE: src,
            K_INGRESS_PORT: in_port,
            K_IPV4_SRC: _U32.unpack_from(frame, _SRC)[0],
        },
    )
    server = state.table_lookup(T_SERVER_PORT, {K_DEST_SERVER: tgt})
    accepted = changed = stale = False
    epoch = NO_EPOCH
    if (
        slot_ok
        and sender.action == A_SENDER_VERIFIED
        and server.action == A_SET_SERVER_PORT
        and len(frame) >= _CONTROL_END
    ):
        epoch = _CONTROL_AT.unpack_from(frame, _EPOCH)[0]
        current = state.register_read(R_SLOT_EPOCH, index)
        if kind == _START:
            if src == owner and tgt and tgt != owner:
                if not target:
                    if epoch > current:
                        state.register_write(R_SLOT_MAP, index, (owner_raw << 8) | tgt)
                        state.register_write(R_SLOT_EPOCH, index, epoch)
                        accepted = changed = True
                    else:
                        stale = True
                elif target == tgt:
                    # A resent START: the entry stays. An unknown epoch (NO_EPOCH: restored
                    # without it) is taken from the migration in flight.
                    accepted = epoch == current or current == NO_EPOCH
                    stale = not accepted
                    if accepted:
                        state.register_write(R_SLOT_EPOCH, index, epoch)
        elif src == owner and target and tgt == target:
            if epoch == current or current == NO_EPOCH:
                state.register_write(R_SLOT_MAP, index, tgt << 8)
                state.register_write(R_SLOT_EPOCH, index, epoch)
                accepted = changed = True
            else:
                stale = True
        elif owner == tgt and not target:
            # A resent COMPLETE: the entry stays.
            accepted = epoch == current or current == NO_EPOCH
            stale = not accepted
            if accepted:
                state.register_write(R_SLOT_EPOCH, index, epoch)
    if changed:
        state.digest(
            D_SLOT_TRANSITION,
            {"keyspace": ks["keyspace_id"], "slot": slot, "op": op, "owner": owner, "target": tgt},
        )
    if not accepted:
        state.counter_add(C_DECISION, _D_STALE if stale else _D_REJECTED, nbytes)
        return []
    state.counter_add(C_DECISION, _D_ACCEPTED, nbytes)
    port = server.params["port"]
    if port == DROP_PORT:
        return []
    out = _steered(frame, state, tgt, flags, ttl, proto, csum, dst)
    return [_output(port, out, in_port, 0, state.cpu_port)]


def _steered(
    frame: bytes,
    state: PipelineState,
    server: int,
    flags: int,
    ttl: int,
    proto: int,
    csum: int,
    dst: int,
) -> bytes:
    """A steered request as it leaves: flags, TTL, server_rewrite, UDP and IPv4 checksums.

    ``csum`` is the verified checksum of the header as received; the new one follows from the
    TTL and destination changes (the same value update_checksum computes from scratch).
    """
    buf = bytearray(frame)
    call = state.table_lookup(T_SERVER_REWRITE, {K_EGRESS_SERVER: server})
    new_ttl = (ttl - 1) & 0xFF
    delta = (new_ttl - ttl) << 8
    if call.action == A_REWRITE_TO_SERVER:
        params = call.params
        new_dst = params["dst_ip"]
        delta += new_dst - dst
        buf[0:6] = params["dst_mac"].to_bytes(6, "big")
        _U32.pack_into(buf, _DST, new_dst)
        _U16.pack_into(buf, _UDP_DPORT, params["udp_port"])
    _TTL_PROTO_CSUM.pack_into(buf, _TTL, new_ttl, proto, ipv4_checksum_adjust(csum, delta))
    buf[_UDP_CSUM] = buf[_UDP_CSUM + 1] = 0
    buf[_NM_FLAGS] = flags
    return bytes(buf)


def _output(port: int, frame: bytes, in_port: int, reason: int, cpu_port: int) -> Output:
    """Egress: a frame to the CPU port becomes a packet-in with its metadata."""
    if port == cpu_port:
        return Output(port, frame, {"ingress_port": in_port, "reason": reason})
    return Output(port, frame, _NO_METADATA)
