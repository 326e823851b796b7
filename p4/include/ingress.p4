/*
 * Ingress: packet-out, keyspace and slot-map lookup, request steering, slot transitions,
 * controller access to slot_map, plain IPv4 forwarding, counters.
 *
 * docs/pipeline.md is the specification; the numbered steps below refer to its "Ingress"
 * section. netmigrate.switch.pipeline is the lab switch's twin of this control.
 */

#ifndef _NETMIGRATE_INGRESS_P4_
#define _NETMIGRATE_INGRESS_P4_

control NetMigrateIngress(inout headers_t hdr,
                          inout metadata_t meta,
                          inout standard_metadata_t standard_metadata) {

    // Per keyspace, SLOT_COUNT entries from its slot_base: owner byte ++ target byte.
    @id(0x16000001)
    register<bit<16>>(SLOT_MAP_SIZE) slot_map;

    // Same index as slot_map: the epoch of the slot's latest migration. A transition must
    // carry it (COMPLETE, a resent START) or exceed it (a new START), so a replayed or delayed
    // transition of an earlier migration changes nothing. NO_EPOCH: the switch does not know
    // it (the slot never migrated here, or its entry was restored without it after a
    // restart): a COMPLETE or resent START then sets it, so that the migration in flight can
    // finish.
    @id(0x16000002)
    register<bit<32>>(SLOT_MAP_SIZE) slot_epoch;

    @id(0x12000001)
    counter(OP_COUNTER_SIZE, CounterType.packets_and_bytes) op_counter;

    @id(0x12000002)
    counter(DECISION_COUNT, CounterType.packets_and_bytes) decision_counter;

    @id(0x01000001)
    action drop() {
        mark_to_drop(standard_metadata);
    }

    // --- Plain IPv4 ------------------------------------------------------------------------

    @id(0x01000002)
    action ipv4_forward(mac_addr_t dst_mac, port_t port) {
        standard_metadata.egress_spec = port;
        hdr.ethernet.dstAddr = dst_mac;
        meta.decision = DECISION_PLAIN_FORWARD;
        meta.forward = 1;
    }

    @id(0x02000001)
    table ipv4_lpm {
        key = {
            hdr.ipv4.dstAddr: lpm;
        }
        actions = {
            ipv4_forward;
            drop;
        }
        default_action = drop();
        size = 1024;
    }

    // --- Keyspaces -------------------------------------------------------------------------

    @id(0x01000003)
    action set_keyspace(bit<16> keyspace_id, server_id_t default_owner, bit<32> slot_base) {
        meta.keyspace_hit = 1;
        meta.keyspace_id = keyspace_id;
        meta.default_owner = default_owner;
        meta.slot_base = slot_base;
    }

    @id(0x01000004)
    action not_keyspace() {
        meta.keyspace_hit = 0;
    }

    @id(0x02000002)
    table keyspace {
        key = {
            hdr.ipv4.dstAddr: exact;
            hdr.udp.dstPort: exact;
        }
        actions = {
            set_keyspace;
            @defaultonly not_keyspace;
        }
        default_action = not_keyspace();
        size = 64;
    }

    // --- Servers ---------------------------------------------------------------------------

    @id(0x01000005)
    action set_server_port(port_t port) {
        standard_metadata.egress_spec = port;
        meta.server_known = 1;
    }

    @id(0x01000006)
    action unknown_server() {
        meta.server_known = 0;
    }

    @id(0x02000003)
    table server_port {
        key = {
            meta.dest_server: exact;
        }
        actions = {
            set_server_port;
            @defaultonly unknown_server;
        }
        default_action = unknown_server();
        size = 256;
    }

    // A slot transition must come from the server it names as its source: that server's
    // switch port and IP address.
    @id(0x01000007)
    action sender_verified() {
        meta.sender_ok = 1;
    }

    @id(0x01000008)
    action sender_unverified() {
        meta.sender_ok = 0;
    }

    @id(0x02000004)
    table sender_check {
        key = {
            hdr.nm.source_id: exact;
            standard_metadata.ingress_port: exact;
            hdr.ipv4.srcAddr: exact;
        }
        actions = {
            sender_verified;
            @defaultonly sender_unverified;
        }
        default_action = sender_unverified();
        size = 256;
    }

    apply {
        // 1. Packet-out.
        if (hdr.packet_out.isValid()) {
            if (hdr.packet_out.submit_to_ingress == 0) {
                standard_metadata.egress_spec = hdr.packet_out.egress_port;
                meta.packet_out_direct = 1;
                hdr.packet_out.setInvalid();
                exit;
            }
            hdr.packet_out.setInvalid();
        }

        // 2. Not IPv4 (or a corrupt IPv4 header: its fields cannot be trusted) -> drop; a
        // corrupt one is counted, so that an operator can tell these drops from others.
        if (!hdr.ipv4.isValid()) {
            drop();
            exit;
        }
        if (standard_metadata.checksum_error == 1) {
            decision_counter.count(DECISION_BAD_CHECKSUM);
            drop();
            exit;
        }

        bool plain = true;
        bool is_cpu_op = false;
        bool is_transition = false;
        bool is_data_op = false;
        bool double_read = false;
        bit<8> op = 0;

        if (hdr.nm.isValid()) {
            // 3. Count the op, look the keyspace up.
            op = hdr.nm.op;
            op_counter.count((bit<32>)op);
            keyspace.apply();

            // 4. Only requests are steered; replies go the plain way.
            if (meta.keyspace_hit == 1 && (op & REPLY_BIT) == 0) {
                is_cpu_op = op == OP_SLOT_SET || op == OP_SLOT_READ;
                is_transition = op == OP_SLOT_START || op == OP_SLOT_COMPLETE;
                is_data_op = nm_is_read_op(op) || nm_is_write_op(op);
            }
        }

        if (is_cpu_op || is_transition || is_data_op) {
            plain = false;
            // 5. The slot's slot_map entry (the register is never touched out of range).
            meta.slot_ok = 0;
            meta.owner_raw = NO_SERVER;
            meta.target = NO_SERVER;
            meta.epoch = NO_EPOCH;
            meta.owner = meta.default_owner;
            if (hdr.nm.slot < SLOT_COUNT && meta.slot_base < SLOT_MAP_SIZE
                    && (bit<32>)hdr.nm.slot < SLOT_MAP_SIZE - meta.slot_base) {
                meta.slot_ok = 1;
                meta.slot_index = meta.slot_base + (bit<32>)hdr.nm.slot;
                bit<16> entry;
                slot_map.read(entry, meta.slot_index);
                meta.owner_raw = entry[15:8];
                meta.target = entry[7:0];
                slot_epoch.read(meta.epoch, meta.slot_index);
                if (meta.owner_raw != NO_SERVER) {
                    meta.owner = meta.owner_raw;
                }
            }
        }

        // 6. By op: where the request goes (tables are applied once, below).
        if (is_transition) {
            meta.dest_server = hdr.nm.target_id;
            sender_check.apply();
        } else if (is_data_op) {
            // DOUBLE_READ and TO_TARGET are the switch's word: a client cannot set them.
            hdr.nm.flags = hdr.nm.flags & ~(FLAG_DOUBLE_READ | FLAG_TO_TARGET);
            if (meta.target == NO_SERVER) {
                meta.dest_server = meta.owner;
                if (meta.slot_ok == 1) {
                    meta.decision = DECISION_TO_OWNER;
                } else {
                    meta.decision = DECISION_BAD_SLOT;
                }
            } else if (nm_is_write_op(op)) {
                meta.dest_server = meta.target;
                hdr.nm.flags = hdr.nm.flags | FLAG_TO_TARGET;
                meta.decision = DECISION_REDIRECTED;
            } else {
                meta.dest_server = meta.owner;
                hdr.nm.flags = hdr.nm.flags | FLAG_DOUBLE_READ;
                meta.decision = DECISION_DOUBLE_READ;
                double_read = true;
            }
        }
        if (is_transition || is_data_op) {
            server_port.apply();
        }

        if (is_cpu_op) {
            // SLOT_SET / SLOT_READ: only the controller, with the control body, answered
            // with a packet-in.
            if (standard_metadata.ingress_port != CPU_PORT || !hdr.nm_control.isValid()) {
                meta.decision = DECISION_CPU_OP_REJECTED;
                drop();
            } else if (meta.slot_ok == 0) {
                meta.decision = DECISION_BAD_SLOT;
                drop();
            } else {
                if (op == OP_SLOT_SET) {
                    slot_map.write(meta.slot_index, hdr.nm.source_id ++ hdr.nm.target_id);
                    meta.owner_raw = hdr.nm.source_id;
                    meta.target = hdr.nm.target_id;
                    // Epochs never go back: a restore raises the slot's epoch to what the
                    // agents know, a rewrite that names a lower one keeps the switch's.
                    if (hdr.nm_control.epoch > meta.epoch) {
                        slot_epoch.write(meta.slot_index, hdr.nm_control.epoch);
                        meta.epoch = hdr.nm_control.epoch;
                    }
                }
                hdr.nm.op = op | REPLY_BIT;
                hdr.nm.source_id = meta.owner_raw;
                hdr.nm.target_id = meta.target;
                hdr.nm_control.epoch = meta.epoch;
                hdr.udp.checksum = 0;
                standard_metadata.egress_spec = CPU_PORT;
                meta.packet_in_reason = PACKET_IN_REASON_SLOT_MAP;
                meta.decision = DECISION_CPU_OP;
            }
        } else if (is_transition) {
            // SLOT_START / SLOT_COMPLETE: only from the slot's owner, naming a known server,
            // with the epoch of the slot's migration: a new START must exceed the slot's
            // epoch, a resent START and a COMPLETE must carry it. One that passes every other
            // check but not this one is a transition of an earlier migration: stale.
            server_id_t src = hdr.nm.source_id;
            server_id_t tgt = hdr.nm.target_id;
            bool accepted = false;
            bool changed = false;
            bool stale = false;
            if (meta.slot_ok == 1 && meta.sender_ok == 1 && meta.server_known == 1
                    && hdr.nm_control.isValid()) {
                bit<32> epoch = hdr.nm_control.epoch;
                if (op == OP_SLOT_START) {
                    if (src == meta.owner && tgt != NO_SERVER && tgt != meta.owner) {
                        if (meta.target == NO_SERVER) {
                            if (epoch > meta.epoch) {
                                slot_map.write(meta.slot_index, meta.owner_raw ++ tgt);
                                slot_epoch.write(meta.slot_index, epoch);
                                accepted = true;
                                changed = true;
                            } else {
                                stale = true;
                            }
                        } else if (meta.target == tgt) {
                            if (epoch == meta.epoch || meta.epoch == NO_EPOCH) {
                                slot_epoch.write(meta.slot_index, epoch);
                                accepted = true;  // a resent START: the entry stays
                            } else {
                                stale = true;
                            }
                        }
                    }
                } else {
                    if (src == meta.owner && meta.target != NO_SERVER && tgt == meta.target) {
                        if (epoch == meta.epoch || meta.epoch == NO_EPOCH) {
                            slot_map.write(meta.slot_index, tgt ++ NO_SERVER);
                            slot_epoch.write(meta.slot_index, epoch);
                            accepted = true;
                            changed = true;
                        } else {
                            stale = true;
                        }
                    } else if (meta.owner == tgt && meta.target == NO_SERVER) {
                        if (epoch == meta.epoch || meta.epoch == NO_EPOCH) {
                            slot_epoch.write(meta.slot_index, epoch);
                            accepted = true;  // a resent COMPLETE: the entry stays
                        } else {
                            stale = true;
                        }
                    }
                }
            }
            if (changed) {
                meta.digest_data.keyspace = meta.keyspace_id;
                meta.digest_data.slot = hdr.nm.slot;
                meta.digest_data.op = op;
                meta.digest_data.owner = meta.owner;
                meta.digest_data.target = tgt;
                digest<slot_transition_t>(DIGEST_RECEIVER, meta.digest_data);
            }
            if (accepted) {
                meta.decision = DECISION_TRANSITION_ACCEPTED;
                meta.steered = 1;
                meta.forward = 1;
            } else if (stale) {
                meta.decision = DECISION_TRANSITION_STALE;
                drop();
            } else {
                meta.decision = DECISION_TRANSITION_REJECTED;
                drop();
            }
        } else if (is_data_op) {
            // 7. Steered requests need a known destination server.
            if (meta.server_known == 1) {
                meta.steered = 1;
                meta.forward = 1;
                if (double_read) {
                    meta.clone_server = meta.target;
                    clone_preserving_field_list(CloneType.I2E, (bit<32>)meta.target,
                                                FieldList_t.CLONE);
                }
            } else {
                meta.decision = DECISION_NO_SERVER;
                drop();
            }
        }

        // 8. Plain IPv4.
        if (plain) {
            meta.decision = DECISION_NO_ROUTE;
            ipv4_lpm.apply();
        }

        // TTL of every forwarded packet. The header checksum is updated incrementally
        // (RFC 1624, eqn. 3) for headers with options; NetMigrateComputeChecksum recomputes
        // it from scratch for the others.
        if (meta.forward == 1) {
            bit<16> old_word = hdr.ipv4.ttl ++ hdr.ipv4.protocol;
            hdr.ipv4.ttl = hdr.ipv4.ttl - 1;
            bit<16> new_word = hdr.ipv4.ttl ++ hdr.ipv4.protocol;
            bit<32> sum = (bit<32>)(~hdr.ipv4.hdrChecksum) + (bit<32>)(~old_word)
                          + (bit<32>)new_word;
            sum = (sum & 0xFFFF) + (sum >> 16);
            sum = (sum & 0xFFFF) + (sum >> 16);
            hdr.ipv4.hdrChecksum = ~sum[15:0];
        }

        // 9. Every IPv4 packet counts once under its decision.
        decision_counter.count(meta.decision);
    }
}

#endif  // _NETMIGRATE_INGRESS_P4_
