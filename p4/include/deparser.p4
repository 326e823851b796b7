/*
 * Deparser. packet_out is never emitted: a frame from the controller leaves without it.
 */

#ifndef _NETMIGRATE_DEPARSER_P4_
#define _NETMIGRATE_DEPARSER_P4_

control NetMigrateDeparser(packet_out packet, in headers_t hdr) {
    apply {
        packet.emit(hdr.packet_in);
        packet.emit(hdr.ethernet);
        packet.emit(hdr.ipv4);
        packet.emit(hdr.udp);
        packet.emit(hdr.nm);
        packet.emit(hdr.nm_control);
    }
}

#endif  // _NETMIGRATE_DEPARSER_P4_
