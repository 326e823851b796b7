/*
 * Egress: packet-in header for the CPU port, and the server rewrite of steered requests.
 *
 * BMv2 builds an ingress-to-egress clone from the packet as it *entered* ingress (re-parsed,
 * with only the @field_list metadata carried over), so the double-read clone gets its TTL
 * decrement and its flags here rather than from ingress.
 */

#ifndef _NETMIGRATE_EGRESS_P4_
#define _NETMIGRATE_EGRESS_P4_

control NetMigrateEgress(inout headers_t hdr,
                         inout metadata_t meta,
                         inout standard_metadata_t standard_metadata) {

    @id(0x01000009)
    action rewrite_to_server(mac_addr_t dst_mac, ipv4_addr_t dst_ip, bit<16> udp_port) {
        hdr.ethernet.dstAddr = dst_mac;
        hdr.ipv4.dstAddr = dst_ip;
        hdr.udp.dstPort = udp_port;
    }

    @id(0x0100000A)
    action no_rewrite() {
    }

    @id(0x02000005)
    table server_rewrite {
        key = {
            meta.egress_server: exact;
        }
        actions = {
            rewrite_to_server;
            @defaultonly no_rewrite;
        }
        default_action = no_rewrite();
        size = 256;
    }

    apply {
        if (meta.steered == 1) {
            if (standard_metadata.instance_type == PKT_INSTANCE_TYPE_INGRESS_CLONE) {
                // The double-read copy for the migration target.
                meta.egress_server = meta.clone_server;
                hdr.nm.flags = hdr.nm.flags | FLAG_DOUBLE_READ | FLAG_TO_TARGET;
                hdr.ipv4.ttl = hdr.ipv4.ttl - 1;
            } else {
                meta.egress_server = meta.dest_server;
            }
            server_rewrite.apply();
            // The rewrite changes the UDP pseudo-header: send no UDP checksum rather than a
            // wrong one.
            hdr.udp.checksum = 0;
        }
        if (standard_metadata.egress_port == CPU_PORT) {
            hdr.packet_in.setValid();
            hdr.packet_in.ingress_port = standard_metadata.ingress_port;
            hdr.packet_in.reason = meta.packet_in_reason;
        }
    }
}

#endif  // _NETMIGRATE_EGRESS_P4_
