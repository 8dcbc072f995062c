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

/* Set in a flow's TCP flags when a SYN without ACK was seen: the flow's source opened the
 * connection (weir_core::flow::FLAG_SYN_NO_ACK). Above the nine header flag bits. */
#define FLAG_SYN_NO_ACK 0x1000

/* Index of each per-CPU counter in the `counters` map. */
enum weir_counter {
	WEIR_CNT_UNUSED = 0,         /* reserved (skbs are counted per flow, not here: hot path) */
	WEIR_CNT_SAMPLED_OUT = 1,    /* skbs skipped by 1-in-N sampling */
	WEIR_CNT_MAP_FULL = 2,       /* skbs whose flow did not fit in the map (sent by ring buffer) */
	WEIR_CNT_RINGBUF_LOST = 3,   /* skbs lost because the ring buffer was full too */
	WEIR_CNT_TRUNCATED = 4,      /* skbs whose headers could not be read completely */
	WEIR_CNT_FILTERED = 5,       /* skbs (or drops) a filter rule rejected */
	WEIR_CNT_DNS_LOST = 6,       /* DNS payloads lost because their ring buffer was full */
	WEIR_CNT_DROPS = 7,          /* drops (kfree_skb with a reason) attached to flows */
	WEIR_CNT_RTT = 8,            /* RTTs copied to arriving flows (at most 1 per flow, CPU, tick) */
	WEIR_CNT_MAX = 9,
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
	/* This CPU's cached filter decision for the flow's packets without any of the rules'
	 * TCP flags: admitted, 1-in-`filter_sampling`, while `config.filter_gen` equals
	 * `filter_gen` (never 0, so a fresh slot holds none). Kernel only. */
	__u16 filter_gen;
	__u32 filter_sampling;
	/* Drops (kfree_skb tracepoint) of this flow's packets; a flow may hold only drops. */
	__u64 drop_bytes;
	__u64 drop_ns;      /* time of the latest drop (picks the latest reason across CPUs) */
	__u32 drop_packets;
	__u32 drop_reason;  /* enum skb_drop_reason of the running kernel; named in user space */
	/* Smoothed RTT of the local TCP socket the flow belongs to (read as it sends). */
	__u64 rtt_ns_at;    /* when it was sampled (picks the latest across CPUs) */
	__u32 rtt_us;
	__u32 rtt_copied;   /* tick (now >> 20) the RTT last went to the arriving flow */
	/* cgroup v2 id of the sending socket (egress, where the kernel has one); 0 = unknown. */
	__u64 cgroup_id;
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
	__u32 netns_ino;  /* namespace this copy watches: the tracing program skips other ones */
	__u32 consumed_reason; /* SKB_CONSUMED on the running kernel (a free, not a drop) */
	__u32 filter_count;   /* rules of `filters` in force; 0 = no filtering */
	__u32 filter_default; /* WEIR_FILTER_* when no rule matches */
	__u32 dns;            /* 1: DNS payloads (port 53) are sent to user space */
	__u32 rtt;            /* 1: TCP egress packets carry their socket's smoothed RTT */
	/* Changes with every configuration written (its low 16 bits never 0): a flow's cached
	 * filter decision holds while they are equal (see flow_value.filter_gen). */
	__u32 filter_gen;
	__u32 filter_flags;   /* OR of the rules' tcp_flags: packets with any are never cached */
	/* The tick clock, calibrated by user space (`weir_clock`): CLOCK_MONOTONIC at the start
	 * of the current jiffy is tick_base_ns + jiffies * tick_ns. 0: not calibrated. */
	__u64 tick_ns;
	__u64 tick_base_ns;
};

#define WEIR_FILTER_ACCEPT 0
#define WEIR_FILTER_REJECT 1
#define WEIR_FILTER_SAMPLE 2
#define WEIR_MAX_FILTERS 16

/* One in-kernel filter rule (`filters` array). Rules are tried in order; the first accept or
 * reject rule that matches decides. A sample rule decides nothing: the first that matches
 * sets the packet's 1-in-N (its `sampling`, 0 = none more), and a kept packet is sampled at
 * the higher of that and what decided it. Addresses are IPv6 or IPv4-mapped, masks
 * precomputed by user space. */
struct filter_rule {
	__u8 cidr[16];      /* matches when either address is in it */
	__u8 cidr_mask[16]; /* all zero: any address */
	__u8 peer[16];      /* with cidr: the other address must be in it */
	__u8 peer_mask[16];
	__u16 port_min;     /* either port within [min, max]; 0-0 = any */
	__u16 port_max;
	__u16 tcp_flags;    /* any of these flags in the packet; 0 = any */
	__u8 proto;         /* 0 = any */
	__u8 direction;     /* 0 any, 1 ingress, 2 egress */
	__u8 action;        /* WEIR_FILTER_* */
	__u8 drops_only;    /* 1: matches dropped packets only (kfree_skb), never at TC */
	__u16 _pad;
	__u32 sampling;     /* 1-in-N for what this rule accepts or samples; 0 = the global sampling */
};

/* Most DNS payload bytes sent to user space per packet. */
#define WEIR_DNS_MAX 256

/* A DNS packet (port 53, UDP or TCP) seen at TC, parsed and matched in user space. */
struct dns_event {
	struct flow_key key;
	__u64 ts_ns;
	__u16 len; /* payload bytes in `payload` */
	__u16 _pad[3];
	__u8 payload[WEIR_DNS_MAX];
};

#endif
