/*
 * IPv4 header checksum: verified on arrival, recomputed on departure.
 *
 * Both cover the 20-byte header only, so both apply only when IHL is 5. A header with options
 * gets the incremental update of its TTL change in ingress instead (RFC 1624), which keeps a
 * correct checksum correct without parsing the options.
 */

#ifndef _NETMIGRATE_CHECKSUMS_P4_
#define _NETMIGRATE_CHECKSUMS_P4_

control NetMigrateVerifyChecksum(inout headers_t hdr, inout metadata_t meta) {
    apply {
        verify_checksum(
            hdr.ipv4.isValid() && hdr.ipv4.ihl == IPV4_IHL_NO_OPTIONS,
            { hdr.ipv4.version,
              hdr.ipv4.ihl,
              hdr.ipv4.diffserv,
              hdr.ipv4.totalLen,
              hdr.ipv4.identification,
              hdr.ipv4.flags,
              hdr.ipv4.fragOffset,
              hdr.ipv4.ttl,
              hdr.ipv4.protocol,
              hdr.ipv4.srcAddr,
              hdr.ipv4.dstAddr },
            hdr.ipv4.hdrChecksum,
            HashAlgorithm.csum16);
    }
}

control NetMigrateComputeChecksum(inout headers_t hdr, inout metadata_t meta) {
    apply {
        // A packet-out sent straight to a port leaves byte for byte as the controller made it.
        update_checksum(
            hdr.ipv4.isValid() && hdr.ipv4.ihl == IPV4_IHL_NO_OPTIONS
                && meta.packet_out_direct == 0,
            { hdr.ipv4.version,
              hdr.ipv4.ihl,
              hdr.ipv4.diffserv,
              hdr.ipv4.totalLen,
              hdr.ipv4.identification,
              hdr.ipv4.flags,
              hdr.ipv4.fragOffset,
              hdr.ipv4.ttl,
              hdr.ipv4.protocol,
              hdr.ipv4.srcAddr,
              hdr.ipv4.dstAddr },
            hdr.ipv4.hdrChecksum,
            HashAlgorithm.csum16);
    }
}

#endif  // _NETMIGRATE_CHECKSUMS_P4_
