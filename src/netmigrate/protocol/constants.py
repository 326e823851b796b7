"""Every constant of the NetMigrate wire protocol, in one place.

The P4 program gets these through a generated include (``netmigrate gen-p4-constants``),
the lab switch, agents and clients import them from here. Nothing else may spell a
protocol number by hand.
"""

from __future__ import annotations

import enum
import struct

VERSION = 1

#: Fixed header: version, op, flags, status, keyspace, slot, source_id, target_id, request_id.
HEADER = struct.Struct("!BBBBHHBBQ")
HEADER_LEN = HEADER.size  # 18 bytes

#: Body of every control op (SLOT_START, SLOT_COMPLETE, SLOT_SET, SLOT_READ) and of their OK
#: replies, right after the header: the slot's transition epoch (docs/decisions.md "Transition
#: epochs"). The switch parses it as the ``nm_control`` header, so it is fixed-size.
CONTROL = struct.Struct("!I")
CONTROL_LEN = CONTROL.size  # 4 bytes
#: Epochs are per slot and only grow; 0 means "none yet" (a slot that never migrated).
NO_EPOCH = 0
MAX_EPOCH = (1 << (8 * CONTROL_LEN)) - 1

#: Positions of the fields in the tuple ``HEADER.unpack`` returns (and
#: :func:`netmigrate.protocol.codec.decode_fields` hands out), for hot paths that skip
#: building a :class:`~netmigrate.protocol.codec.Header`.
F_VERSION, F_OP, F_FLAGS, F_STATUS, F_KEYSPACE, F_SLOT, F_SOURCE_ID, F_TARGET_ID, F_REQUEST_ID = (
    range(9)
)

#: Bit set in ``op`` of every reply.
REPLY_BIT = 0x80

#: Slots per keyspace, as in Redis Cluster.
SLOT_COUNT = 16384

#: Server id 0 never names a server: in the switch's slot map it means
#: "keyspace default owner" (owner byte) or "none" (target byte).
NO_SERVER = 0
MAX_SERVER_ID = 254

#: UDP destination ports whose datagrams the switch parses as NetMigrate requests:
#: ``port & SERVICE_PORT_MASK == SERVICE_PORT_BASE`` (50000..50015).
SERVICE_PORT_BASE = 50000
SERVICE_PORT_MASK = 0xFFF0

#: The local lab's link MTU. Only the lab uses it: everywhere else the largest datagram is a
#: setting derived from the path MTU (protocol.path_mtu, docs/decisions.md "No fragmentation").
LAB_MTU = 9000

#: What a datagram's IP and UDP headers take from the MTU (IPv4 without options: 20 + 8;
#: IPv6: 40 + 8), and the largest UDP payload IPv4 allows (65535 - 20 - 8).
IPV4_UDP_OVERHEAD = 28
IPV6_UDP_OVERHEAD = 48
UDP_MAX_PAYLOAD = 65507
#: Smallest max-datagram setting accepted: room for a header and a short key.
MIN_DATAGRAM = 64

#: RESP versions a generic command's reply may be written in (RESP2, or RESP3 after HELLO 3).
RESP_VERSIONS = frozenset({2, 3})

#: Length prefixes of the payload encoding.
KEY_LEN = struct.Struct("!H")
VALUE_LEN = struct.Struct("!I")
COUNT = struct.Struct("!H")
I64 = struct.Struct("!q")
U64 = struct.Struct("!Q")
U32 = struct.Struct("!I")
U8 = struct.Struct("!B")


class Op(enum.IntEnum):
    """Request op codes. A reply carries ``op | REPLY_BIT``."""

    GET = 0x01
    SET = 0x02
    DEL = 0x03
    INCRBY = 0x04
    MGET = 0x05
    MSET = 0x06
    #: Any Redis command that reads keys of one slot (arguments in the payload): double-read.
    CMD_READ = 0x07
    #: Any Redis command that may write keys of one slot: sent to the migration target.
    CMD_WRITE = 0x08
    #: Source agent -> target agent through the switch: the slot starts migrating.
    SLOT_START = 0x10
    #: Source agent -> target agent through the switch: the target now owns the slot.
    SLOT_COMPLETE = 0x11
    #: Controller -> switch, from the CPU port only: write one slot_map entry.
    SLOT_SET = 0x20
    #: Controller -> switch, from the CPU port only: read one slot_map entry (packet-in reply).
    SLOT_READ = 0x21


#: Ops the switch sends to the migration target while a slot migrates.
WRITE_OPS = frozenset({Op.SET, Op.DEL, Op.INCRBY, Op.MSET, Op.CMD_WRITE})
#: Ops the switch double-reads (owner + clone to target) while a slot migrates.
READ_OPS = frozenset({Op.GET, Op.MGET, Op.CMD_READ})
DATA_OPS = WRITE_OPS | READ_OPS
#: Slot-transition ops the switch validates against the owner before applying.
TRANSITION_OPS = frozenset({Op.SLOT_START, Op.SLOT_COMPLETE})
#: Ops accepted only from the switch's CPU port.
CPU_OPS = frozenset({Op.SLOT_SET, Op.SLOT_READ})
#: Ops whose body is the fixed CONTROL record (the switch parses it as ``nm_control``).
CONTROL_OPS = TRANSITION_OPS | CPU_OPS


class Flag(enum.IntFlag):
    NONE = 0
    #: The switch sent one copy to the owner and one clone to the migration target.
    DOUBLE_READ = 0x01
    #: This copy was redirected or cloned to the migration target.
    TO_TARGET = 0x02
    #: The client resent this request (same request id).
    RETRY = 0x04


class Status(enum.IntEnum):
    OK = 0
    NOT_FOUND = 1
    #: The migration target has no authoritative answer yet (double-read copy).
    MISS = 2
    WRONG_OWNER = 3
    CROSSSLOT = 4
    TOO_LARGE = 5
    BAD_REQUEST = 6
    BUSY = 7
    ERROR = 8


#: Statuses after which resending the same request can succeed.
RETRYABLE_STATUSES = frozenset({Status.WRONG_OWNER, Status.BUSY, Status.MISS})


class SetCondition(enum.IntEnum):
    """Condition byte of SET."""

    ALWAYS = 0
    NX = 1  # only if the key does not exist
    XX = 2  # only if the key exists


#: Switch decisions, the index of the pipeline's ``decision_counter``.
class Decision(enum.IntEnum):
    PLAIN_FORWARD = 0  # not NetMigrate (or a reply): plain IPv4
    TO_OWNER = 1  # stable slot, request sent to its owner
    REDIRECTED = 2  # write to a migrating slot, sent to the target
    DOUBLE_READ = 3  # read of a migrating slot, owner + clone to target
    TRANSITION_ACCEPTED = 4  # SLOT_START / SLOT_COMPLETE applied
    TRANSITION_REJECTED = 5  # SLOT_START / SLOT_COMPLETE not from the owner, or bad target
    CPU_OP = 6  # SLOT_SET / SLOT_READ from the CPU port
    CPU_OP_REJECTED = 7  # SLOT_SET / SLOT_READ from a data port
    NO_SERVER = 8  # destination server unknown to the switch: dropped
    NO_ROUTE = 9  # plain IPv4 without a route: dropped
    BAD_SLOT = 10  # slot >= SLOT_COUNT: sent to the keyspace default owner
    BAD_CHECKSUM = 11  # IPv4 header (no options) whose checksum does not verify: dropped
    #: SLOT_START / SLOT_COMPLETE from the owner whose epoch is not the slot's current one (a
    #: replayed or delayed transition of an earlier migration): dropped.
    TRANSITION_STALE = 12


DECISION_COUNT = 16


# ---------------------------------------------------------------------------------------------
# Pipeline constants shared by p4/netmigrate.p4 (through the generated include) and the lab
# switch. Table, action and register ids are NOT here: the committed P4Info is their source.

#: The switch port that stands for the controller (packet-in / packet-out), as BMv2's
#: ``--cpu-port 255``.
CPU_PORT = 255
#: Keyspaces the slot_map register has room for (register size = MAX_KEYSPACES * SLOT_COUNT).
MAX_KEYSPACES = 4
SLOT_MAP_SIZE = MAX_KEYSPACES * SLOT_COUNT
#: ``packet_in.reason`` of the switch's answer to SLOT_SET / SLOT_READ.
PACKET_IN_REASON_SLOT_MAP = 1
#: v1model field list id preserved into the double-read clone.
CLONE_FIELD_LIST = 1
