/*
 * Headers, metadata and the digest record of the NetMigrate pipeline.
 *
 * Protocol numbers and the NetMigrate header (nm_t) come from the generated constants.p4; this
 * file holds the standard Ethernet/IPv4/UDP layouts and the pipeline's own state.
 */

#ifndef _NETMIGRATE_HEADERS_P4_
#define _NETMIGRATE_HEADERS_P4_

typedef bit<48> mac_addr_t;
typedef bit<32> ipv4_addr_t;
typedef bit<9>  port_t;
typedef bit<8>  server_id_t;

// @noWarn("unused"): p4c folds constants into their uses before it looks for unused
// declarations, and would call each of these unused.

@noWarn("unused") const bit<16> ETHERTYPE_IPV4 = 0x0800;
@noWarn("unused") const bit<8>  IPPROTO_UDP = 17;
// IHL of a header without options: only such headers lead to UDP (and get a full checksum).
@noWarn("unused") const bit<4>  IPV4_IHL_NO_OPTIONS = 5;
// standard_metadata.instance_type of an ingress-to-egress clone on BMv2.
@noWarn("unused") const bit<32> PKT_INSTANCE_TYPE_INGRESS_CLONE = 1;
// digest() receiver argument; BMv2 ignores it.
@noWarn("unused") const bit<32> DIGEST_RECEIVER = 1;

// Controller headers (P4Runtime PacketIn / PacketOut metadata).

@controller_header("packet_in") @id(0x04000001)
header packet_in_t {
    port_t ingress_port;
    bit<7> reason;
}

@controller_header("packet_out") @id(0x04000002)
header packet_out_t {
    port_t egress_port;
    bit<1> submit_to_ingress;
    bit<6> _pad;
}

header ethernet_t {
    mac_addr_t dstAddr;
    mac_addr_t srcAddr;
    bit<16>    etherType;
}

header ipv4_t {
    bit<4>      version;
    bit<4>      ihl;
    bit<8>      diffserv;
    bit<16>     totalLen;
    bit<16>     identification;
    bit<3>      flags;
    bit<13>     fragOffset;
    bit<8>      ttl;
    bit<8>      protocol;
    bit<16>     hdrChecksum;
    ipv4_addr_t srcAddr;
    ipv4_addr_t dstAddr;
}

header udp_t {
    bit<16> srcPort;
    bit<16> dstPort;
    bit<16> len;
    bit<16> checksum;
}

struct headers_t {
    packet_out_t packet_out;
    packet_in_t  packet_in;
    ethernet_t   ethernet;
    ipv4_t       ipv4;
    udp_t        udp;
    nm_t         nm;
    nm_control_t nm_control;  // control ops only: the slot's epoch
}

// One accepted slot transition (SLOT_START or SLOT_COMPLETE), sent to the controller.
struct slot_transition_t {
    bit<16>     keyspace;
    bit<16>     slot;
    bit<8>      op;
    server_id_t owner;   // the owner before the transition
    server_id_t target;  // the server the transition names (nm.target_id)
}

struct metadata_t {
    // keyspace table
    bit<1>      keyspace_hit;
    bit<16>     keyspace_id;
    server_id_t default_owner;
    bit<32>     slot_base;
    // slot_map entry of the request's slot
    bit<1>      slot_ok;       // slot < SLOT_COUNT and slot_base + slot inside slot_map
    bit<32>     slot_index;
    server_id_t owner_raw;     // owner byte as stored (NO_SERVER: keyspace default)
    server_id_t owner;         // owner byte resolved to a server
    server_id_t target;        // NO_SERVER: the slot is stable
    bit<32>     epoch;         // slot_epoch entry (NO_EPOCH for a bad slot)
    // table results
    bit<1>      sender_ok;
    bit<1>      server_known;
    // where the packet goes
    bit<32>     decision;
    bit<1>      forward;       // leaves through IPv4 forwarding: TTL is decremented
    server_id_t dest_server;
    server_id_t egress_server;
    bit<7>      packet_in_reason;
    bit<1>      packet_out_direct;
    // BMv2 copies these into the double-read clone with their values at the end of ingress.
    @field_list(FieldList_t.CLONE)
    bit<1>      steered;
    @field_list(FieldList_t.CLONE)
    server_id_t clone_server;
    slot_transition_t digest_data;
}

#endif  // _NETMIGRATE_HEADERS_P4_
