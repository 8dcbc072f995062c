/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The one shared definition of every map record of weir's flow capture.
 * Rust mirrors live in ebpf/src/records.rs (#[repr(C)], size-asserted): change both together.
 */
#ifndef WEIR_FLOW_H
#define WEIR_FLOW_H

#include <linux/types.h>

/* Direction of a packet relative to the interface it was seen on (NetObserv IfDirection). */
#define WEIR_DIR_INGRESS 0
#define WEIR_DIR_EGRESS 1

/* Index of each per-CPU counter in the `counters` map. */
enum weir_counter {
	WEIR_CNT_UNUSED = 0,         /* reserved (skbs are counted per flow, not here: hot path) */
	WEIR_CNT_SAMPLED_OUT = 1,    /* skbs skipped by 1-in-N sampling */
	WEIR_CNT_MAP_FULL = 2,       /* skbs whose flow did not fit in the map (sent by ring buffer) */
	WEIR_CNT_RINGBUF_LOST = 3,   /* skbs lost because the ring buffer was full too */
	WEIR_CNT_TRUNCATED = 4,      /* skbs whose headers could not be read completely */
	WEIR_CNT_MAX = 5,
};

/* Key of one flow: zero-filled before use, no implicit padding (hashed byte by byte), 48 bytes. */
struct flow_key {
	__u8 src_addr[16]; /* IPv6, or IPv4-mapped IPv6 (::ffff:a.b.c.d) */
	__u8 dst_addr[16];
	__u32 ifindex;
	__u16 eth_type; /* host byte order */
	__u16 src_port; /* host byte order; 0 where the protocol has none */
	__u16 dst_port;
	__u8 proto; /* IP protocol number; 0 for non-IP frames */
	__u8 direction; /* WEIR_DIR_* */
	__u8 icmp_type;
	__u8 icmp_code;
	__u16 _pad;
};

/* Per-CPU accumulated values of one flow. MACs are kept here, from the first packet, rather
 * than in the key: they rarely differ within a flow and a shorter key hashes faster. */
struct flow_value {
	__u64 first_seen_ns; /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u64 last_seen_ns;
	__u64 bytes;   /* skb->len, as the interface statistics count them */
	__u64 packets; /* GSO-segment aware: max(1, gso_segs) per skb */
	__u64 skbs;    /* skbs, as the interface statistics count packets */
	__u32 sampling; /* 1-in-N sampling in force when the flow was seen; 0 or 1 = none */
	__u16 tcp_flags; /* OR of the TCP flags seen (FIN=0x1 ... CWR=0x80, NS=0x100) */
	__u8 src_mac[6];
	__u8 dst_mac[6];
	__u16 _pad;
	__u32 _pad2;
};

/* A flow sent through the ring buffer when the map is full. */
struct flow_record {
	struct flow_key key;
	struct flow_value value;
};

/* Run-time configuration, index 0 of the `config` array map. */
struct weir_config {
	__u32 active_map; /* 0: flows_a, 1: flows_b; user space flips it, then drains the other */
	__u32 sampling;   /* 1-in-N; 0 or 1 = every packet */
};

#endif
