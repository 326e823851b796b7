/*
 * Parser: [packet_out] ethernet / ipv4 / udp / nm [/ nm_control].
 *
 * A frame too short for a header leaves that header invalid; BMv2 then starts ingress with
 * parser_error set and the rest of the frame as payload, which is what the pipeline wants:
 * such frames are forwarded as plain IPv4 (or dropped when not even IPv4).
 */

#ifndef _NETMIGRATE_PARSER_P4_
#define _NETMIGRATE_PARSER_P4_

parser NetMigrateParser(packet_in packet,
                        out headers_t hdr,
                        inout metadata_t meta,
                        inout standard_metadata_t standard_metadata) {
    state start {
        transition select(standard_metadata.ingress_port) {
            CPU_PORT: parse_packet_out;
            default: parse_ethernet;
        }
    }

    state parse_packet_out {
        packet.extract(hdr.packet_out);
        transition parse_ethernet;
    }

    state parse_ethernet {
        packet.extract(hdr.ethernet);
        transition select(hdr.ethernet.etherType) {
            ETHERTYPE_IPV4: parse_ipv4;
            default: accept;
        }
    }

    state parse_ipv4 {
        packet.extract(hdr.ipv4);
        // UDP only behind a header without options, and only in a datagram that is not a
        // fragment (MF clear, offset 0): all fragments of a datagram take the plain path.
        transition select(hdr.ipv4.ihl, hdr.ipv4.flags, hdr.ipv4.fragOffset, hdr.ipv4.protocol) {
            (IPV4_IHL_NO_OPTIONS, 3w0 &&& 3w1, 0, IPPROTO_UDP): parse_udp;
            default: accept;
        }
    }

    state parse_udp {
        packet.extract(hdr.udp);
        transition select(hdr.udp.dstPort) {
            SERVICE_PORT_BASE &&& SERVICE_PORT_MASK: parse_nm;
            default: accept;
        }
    }

    state parse_nm {
        packet.extract(hdr.nm);
        // Control requests carry the slot's epoch right after the header (replies, with
        // REPLY_BIT set, are not parsed further: they are forwarded as plain IPv4).
        transition select(hdr.nm.op) {
            OP_SLOT_START: parse_nm_control;
            OP_SLOT_COMPLETE: parse_nm_control;
            OP_SLOT_SET: parse_nm_control;
            OP_SLOT_READ: parse_nm_control;
            default: accept;
        }
    }

    state parse_nm_control {
        packet.extract(hdr.nm_control);
        transition accept;
    }
}

#endif  // _NETMIGRATE_PARSER_P4_
