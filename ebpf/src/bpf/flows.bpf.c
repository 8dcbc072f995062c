// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * weir flow capture: a TC classifier on ingress and egress that aggregates every frame into a
 * per-CPU flow map. Two maps are used in turn: user space flips `config.active_map`, waits for
 * programs in flight to finish, and drains the idle map with no writer racing it, so no packet
 * is lost between lookup and delete. When the active map is full, the packet is sent as a
 * one-packet flow through the ring buffer; every such case is counted.
 *
 * Optional parts, each loaded (or left out) on its own by user space:
 * - tp_btf/kfree_skb adds dropped packets, bytes and the latest drop reason to the flow;
 * - TCP packets leaving a local socket add its smoothed RTT to their flow and, once a
 *   millisecond, to the connection's arriving flow on the same interface (`config.rtt`);
 * - DNS payloads (port 53) go to user space through `dns_events`;
 * - filter rules (`filters`) accept, reject or sample packets before they are counted.
 * The tracing program sees every namespace: each copy keeps to the one in `config.netns_ino`.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

#include "flow.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define MAX_FLOWS 65536

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, MAX_FLOWS);
	__type(key, struct flow_key);
	__type(value, struct flow_value);
} flows_a SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, MAX_FLOWS);
	__type(key, struct flow_key);
	__type(value, struct flow_value);
} flows_b SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} direct_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct weir_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, WEIR_MAX_FILTERS);
	__type(key, __u32);
	__type(value, struct filter_rule);
} filters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 18);
} dns_events SEC(".maps");

/* The last flow key the filter rules refused on this CPU, under the configuration
 * generation then: back-to-back packets of a refused flow skip both the flow lookup and the
 * rules (a refused flow is never in the flow map, where admitted ones cache theirs). */
struct refused {
	struct flow_key key;
	__u32 gen; /* the whole config.filter_gen: this slot lives as long as the programs */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct refused);
} last_refused SEC(".maps");

/* The connection's arriving flow takes the RTT once per 2^20 ns (~1 ms) of the packets' clock
 * per flow and CPU: with the coarse clock, once per kernel tick (4 ms at HZ=250). A bulk
 * transfer sends a segment every few microseconds. */
#define RTT_TICK_SHIFT 20

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, WEIR_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8
#define IPPROTO_ICMPV6_ 58
#define IPPROTO_SCTP_ 132
#define SOCK_STREAM_ 1

/* Set by user space before loading: 1 where the kernel has bpf_ktime_get_coarse_ns (5.11),
 * and 1 where it has bpf_jiffies64 (5.5). Read-only constants, so the verifier of an older
 * kernel never sees the call. */
volatile const __u32 coarse_clock = 0;
volatile const __u32 jiffies_clock = 0;

/* The clock most packets read, at the granularity of one kernel tick (4 ms at HZ=250):
 * - the tick clock: jiffies mapped onto CLOCK_MONOTONIC by the two numbers user space
 *   calibrated with `weir_clock` (a helper that reads one word, a multiply and an add; the
 *   start of the current tick, as the coarse clock gives it);
 * - else the coarse clock (a helper call that reads the timekeeper under its sequence lock:
 *   ~23 ns a packet more than the tick clock here);
 * - else the precise clock (~37 ns a packet here, as much as the flow's hash lookup).
 * A flow's first packet reads the precise clock (`precise_now`), so its start is exact and
 * its end, the latest of the two, is at most one tick early. */
static __always_inline __u64 packet_now(const struct weir_config *cfg)
{
	__u64 tick = cfg->tick_ns;
	if (jiffies_clock && tick &&
	    bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_jiffies64))
		return cfg->tick_base_ns + bpf_jiffies64() * tick;
	if (coarse_clock &&
	    bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_ktime_get_coarse_ns))
		return bpf_ktime_get_coarse_ns();
	return bpf_ktime_get_ns();
}

static __always_inline __u64 precise_now(void)
{
	return bpf_ktime_get_ns();
}

static __always_inline void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &idx);
	if (c)
		*c += 1;
}

struct l2 {
	__u8 dst[6];
	__u8 src[6];
	__be16 proto;
};

struct ip4 {
	__u8 vihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__be16 check;
	__u8 saddr[4];
	__u8 daddr[4];
};

struct ip6 {
	__be32 vtcfl;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

static __always_inline void map_v4(__u8 *dst, const __u8 *src)
{
	dst[10] = 0xff;
	dst[11] = 0xff;
	dst[12] = src[0];
	dst[13] = src[1];
	dst[14] = src[2];
	dst[15] = src[3];
}

/* Transport header bytes the key needs: ports and flags (TCP), ports (UDP, SCTP), type and
 * code (ICMP); 0 for other protocols. */
static __always_inline __u32 l4_len(__u8 proto)
{
	switch (proto) {
	case IPPROTO_TCP:
		return 14;
	case IPPROTO_UDP:
	case IPPROTO_SCTP_:
		return 4;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6_:
		return 2;
	default:
		return 0;
	}
}

/* TCP flags from header bytes 12 (NS in bit 0) and 13, plus FLAG_SYN_NO_ACK on a SYN without
 * ACK: the flow whose source opened the connection. */
static __always_inline __u16 tcp_flags(__u8 b12, __u8 b13)
{
	__u16 f = b13 | ((__u16)(b12 & 1) << 8);
	if ((b13 & 0x12) == 0x02)
		f |= FLAG_SYN_NO_ACK;
	return f;
}

/* Fills ports (or ICMP type/code) and TCP flags from the first l4_len() bytes of the
 * transport header; returns the offset of the payload from that header (0 when unknown). */
static __always_inline __u32 l4_fields(struct flow_key *k, const __u8 *b, __u16 *flags)
{
	switch (k->proto) {
	case IPPROTO_TCP:
		k->src_port = ((__u16)b[0] << 8) | b[1];
		k->dst_port = ((__u16)b[2] << 8) | b[3];
		*flags = tcp_flags(b[12], b[13]);
		return (b[12] >> 4) * 4;
	case IPPROTO_UDP:
	case IPPROTO_SCTP_:
		k->src_port = ((__u16)b[0] << 8) | b[1];
		k->dst_port = ((__u16)b[2] << 8) | b[3];
		return 8;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6_:
		k->icmp_type = b[0];
		k->icmp_code = b[1];
		return 0;
	default:
		return 0;
	}
}

/* Reads the transport ports (or ICMP type/code) and TCP flags at offset `off`.
 * Returns 0, or -1 when the headers are cut short. */
static __always_inline int try_parse_l4(struct __sk_buff *skb, __u32 off, struct flow_key *k,
					__u16 *flags, __u32 *l7off)
{
	__u8 b[14];

	switch (k->proto) {
	case IPPROTO_TCP:
		if (bpf_skb_load_bytes(skb, off, b, 14) < 0)
			return -1;
		break;
	case IPPROTO_UDP:
	case IPPROTO_SCTP_:
		if (bpf_skb_load_bytes(skb, off, b, 4) < 0)
			return -1;
		break;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6_:
		if (bpf_skb_load_bytes(skb, off, b, 2) < 0)
			return -1;
		break;
	default:
		return 0;
	}
	__u32 l7 = l4_fields(k, b, flags);
	if (l7)
		*l7off = off + l7;
	return 0;
}

/* Fills the key from the frame's headers. Returns 0, or -1 when the headers are cut short. */
static __always_inline int try_parse(struct __sk_buff *skb, struct flow_key *k, __u16 *flags,
				     struct l2 *macs, __u32 *l7off)
{
	struct l2 eth;
	__u32 off = sizeof(struct l2);
	__u16 proto;

	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0)
		return -1;
	__builtin_memcpy(macs, &eth, 12);
	proto = bpf_ntohs(eth.proto);
	if (proto == ETH_P_8021Q_ || proto == ETH_P_8021AD_) {
		__be16 inner[2];
		if (bpf_skb_load_bytes(skb, off, inner, sizeof(inner)) < 0)
			return -1;
		proto = bpf_ntohs(inner[1]);
		off += 4;
	}
	k->eth_type = proto;

	if (proto == ETH_P_IP) {
		struct ip4 ip;
		if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
			return -1;
		map_v4(k->src_addr, ip.saddr);
		map_v4(k->dst_addr, ip.daddr);
		k->proto = ip.protocol;
		/* Only the first fragment carries the transport header. */
		if (bpf_ntohs(ip.frag_off) & 0x1fff)
			return 0;
		off += (ip.vihl & 0x0f) * 4;
		return try_parse_l4(skb, off, k, flags, l7off);
	}
	if (proto == ETH_P_IPV6) {
		struct ip6 ip;
		__u8 next;
		if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
			return -1;
		__builtin_memcpy(k->src_addr, ip.saddr, 16);
		__builtin_memcpy(k->dst_addr, ip.daddr, 16);
		off += sizeof(ip);
		next = ip.nexthdr;
#pragma unroll
		for (int i = 0; i < 4; i++) {
			__u8 ext[2];
			if (next != 0 && next != 43 && next != 60 && next != 44)
				break;
			if (bpf_skb_load_bytes(skb, off, ext, 2) < 0)
				return -1;
			if (next == 44) {
				/* A non-first fragment has no transport header. */
				__u8 frag[4];
				if (bpf_skb_load_bytes(skb, off, frag, 4) < 0)
					return -1;
				k->proto = ext[0];
				if (((frag[2] << 8) | frag[3]) & 0xfff8)
					return 0;
				off += 8;
			} else {
				off += ((__u32)ext[1] + 1) * 8;
			}
			next = ext[0];
		}
		k->proto = next;
		return try_parse_l4(skb, off, k, flags, l7off);
	}
	return 0;
}

/* Fast path: reads the headers straight from the linear packet data. Returns 0 when done,
 * 1 when the slow path must parse (headers not linear, VLAN, IPv6 extension headers, IPv4
 * options or fragments). */
static __always_inline int try_parse_direct(struct __sk_buff *skb, struct flow_key *k, __u16 *flags,
					    struct l2 *macs, __u32 *l7off)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct l2 *eth = data;
	__u8 *l4;

	if ((void *)(eth + 1) > data_end)
		return 1;
	__u16 proto = bpf_ntohs(eth->proto);
	if (proto == ETH_P_IP) {
		struct ip4 *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > data_end || ip->vihl != 0x45 || (bpf_ntohs(ip->frag_off) & 0x3fff))
			return 1;
		map_v4(k->src_addr, ip->saddr);
		map_v4(k->dst_addr, ip->daddr);
		k->proto = ip->protocol;
		l4 = (__u8 *)(ip + 1);
	} else if (proto == ETH_P_IPV6) {
		struct ip6 *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > data_end)
			return 1;
		if (ip->nexthdr == 0 || ip->nexthdr == 43 || ip->nexthdr == 60 || ip->nexthdr == 44)
			return 1;
		__builtin_memcpy(k->src_addr, ip->saddr, 16);
		__builtin_memcpy(k->dst_addr, ip->daddr, 16);
		k->proto = ip->nexthdr;
		l4 = (__u8 *)(ip + 1);
	} else {
		return 1;
	}
	switch (k->proto) {
	case IPPROTO_TCP:
		if ((void *)(l4 + 14) > data_end)
			return 1;
		k->src_port = ((__u16)l4[0] << 8) | l4[1];
		k->dst_port = ((__u16)l4[2] << 8) | l4[3];
		*flags = tcp_flags(l4[12], l4[13]);
		*l7off = (__u32)(l4 - (__u8 *)data) + (l4[12] >> 4) * 4;
		break;
	case IPPROTO_UDP:
	case IPPROTO_SCTP_:
		if ((void *)(l4 + 4) > data_end)
			return 1;
		k->src_port = ((__u16)l4[0] << 8) | l4[1];
		k->dst_port = ((__u16)l4[2] << 8) | l4[3];
		*l7off = (__u32)(l4 - (__u8 *)data) + 8;
		break;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6_:
		if ((void *)(l4 + 2) > data_end)
			return 1;
		k->icmp_type = l4[0];
		k->icmp_code = l4[1];
		break;
	default:
		break;
	}
	__builtin_memcpy(macs, eth, 12);
	k->eth_type = proto;
	return 0;
}

static __always_inline void send_direct(struct flow_key *k, struct flow_value *v)
{
	struct flow_record *r = bpf_ringbuf_reserve(&direct_flows, sizeof(*r), 0);
	if (!r) {
		count(WEIR_CNT_RINGBUF_LOST);
		return;
	}
	__builtin_memcpy(&r->key, k, sizeof(*k));
	__builtin_memcpy(&r->value, v, sizeof(*v));
	bpf_ringbuf_submit(r, 0);
}

/* Adds one skb to this CPU's slot of a flow. Slots of other CPUs start zeroed and no other CPU
 * writes this one, so no atomics are needed. */
/* The cgroup of the socket that sent an egress packet (0 on ingress, where the skb has no
 * socket yet). Read once per flow, when it is created (by the CPU that creates it; other
 * CPUs' slots stay 0 and user space takes the one that is set). */
static __always_inline __u64 sender_cgroup(struct __sk_buff *skb, const struct flow_key *k)
{
	return k->direction == WEIR_DIR_EGRESS ? bpf_skb_cgroup_id(skb) : 0;
}

/* Adds one skb to a flow's value; `rtt_us` (0: none) is its socket's smoothed RTT. Returns
 * whether the RTT is due on the connection's other direction too (see RTT_TICK_SHIFT). */
static __always_inline int accumulate(struct flow_value *v, __u64 now, __u32 len, __u64 segs,
				      __u16 flags, __u32 sampling, const struct l2 *macs,
				      __u32 rtt_us)
{
	int due = 0;
	if (v->first_seen_ns == 0) {
		/* The flow's first packet (the value may hold a drop or an RTT already). */
		__u64 t = precise_now();
		v->first_seen_ns = t;
		v->last_seen_ns = t;
		__builtin_memcpy(v->src_mac, macs->src, 6);
		__builtin_memcpy(v->dst_mac, macs->dst, 6);
	} else if (now > v->last_seen_ns) {
		v->last_seen_ns = now;
	}
	v->bytes += len;
	v->packets += segs;
	v->skbs += 1;
	v->tcp_flags |= flags;
	/* The highest 1-in-N of the flow's packets: a packet a sample rule exempts (a SYN, a
	 * RST) among sampled ones must not make the record's sampled packets count once. */
	if (sampling > v->sampling)
		v->sampling = sampling;
	if (rtt_us) {
		__u32 tick = (__u32)(now >> RTT_TICK_SHIFT);
		v->rtt_us = rtt_us;
		v->rtt_ns_at = now;
		if (v->rtt_copied != tick) {
			v->rtt_copied = tick;
			due = 1;
		}
	}
	return due;
}

/* Caches, in this CPU's slot of a flow, the filter rules' decision for its packets without
 * any of the rules' TCP flags: admitted, 1-in-`sampling` (`fgen` 0: nothing to cache). */
static __always_inline void remember_filter(struct flow_value *v, __u16 fgen, __u32 sampling)
{
	if (fgen) {
		v->filter_gen = fgen;
		v->filter_sampling = sampling;
	}
}

/* Adds one skb to its flow in `map`, inserting the flow if new; the ring buffer takes it
 * when the map is full. */
static __always_inline int update_flow(struct __sk_buff *skb, void *map, struct flow_key *k,
				       __u32 len, __u64 segs, __u16 flags, __u32 sampling,
				       const struct l2 *macs, __u64 now, __u32 rtt_us, __u16 fgen)
{
	struct flow_value *v = bpf_map_lookup_elem(map, k);
	if (v) {
		remember_filter(v, fgen, sampling);
		return accumulate(v, now, len, segs, flags, sampling, macs, rtt_us);
	}
	/* A new flow starts at its first packet's precise time (the RTT fields keep the clock
	 * every packet reads, so later samples compare with this one). */
	__u64 first = precise_now();
	struct flow_value nv = {
		.first_seen_ns = first,
		.last_seen_ns = first,
		.bytes = len,
		.packets = segs,
		.skbs = 1,
		.sampling = sampling,
		.tcp_flags = flags,
		.cgroup_id = sender_cgroup(skb, k),
		.rtt_us = rtt_us,
		.rtt_ns_at = rtt_us ? now : 0,
		.rtt_copied = rtt_us ? (__u32)(now >> RTT_TICK_SHIFT) : 0,
		.filter_gen = fgen,
		.filter_sampling = sampling,
	};
	__builtin_memcpy(nv.src_mac, macs->src, 6);
	__builtin_memcpy(nv.dst_mac, macs->dst, 6);
	long err = bpf_map_update_elem(map, k, &nv, BPF_NOEXIST);
	if (err == 0)
		return rtt_us != 0;
	if (err == -17 /* EEXIST: another CPU inserted it meanwhile */) {
		v = bpf_map_lookup_elem(map, k);
		if (v) {
			remember_filter(v, fgen, sampling);
			return accumulate(v, now, len, segs, flags, sampling, macs, rtt_us);
		}
	}
	count(WEIR_CNT_MAP_FULL);
	send_direct(k, &nv);
	return 0;
}

/* The smoothed RTT (µs) of the TCP socket sending an egress skb; 0 when it has none (no
 * socket, a request or time-wait socket, no sample yet). The socket may be another
 * namespace's: a veth keeps it, so traffic bridged between containers carries its sender's.
 * A raw socket of protocol TCP is not a TCP socket: only stream sockets are read. */
static __always_inline __u32 sender_rtt_us(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;
	if (!sk)
		return 0;
	sk = bpf_sk_fullsock(sk);
	if (!sk || sk->type != SOCK_STREAM_)
		return 0;
	struct bpf_tcp_sock *tp = bpf_tcp_sock(sk);
	if (!tp)
		return 0;
	return tp->srtt_us >> 3;
}

/* Sets the RTT of the connection's arriving flow on the same interface (the reverse of `k`),
 * when it is in the map: a flow sampled out or filtered stays without. */
static __always_inline void rtt_to_reverse(void *map, const struct flow_key *k, __u32 rtt_us,
					   __u64 now)
{
	struct flow_key r = *k;
	__builtin_memcpy(r.src_addr, k->dst_addr, 16);
	__builtin_memcpy(r.dst_addr, k->src_addr, 16);
	r.src_port = k->dst_port;
	r.dst_port = k->src_port;
	r.direction = WEIR_DIR_INGRESS;
	struct flow_value *v = bpf_map_lookup_elem(map, &r);
	if (v) {
		v->rtt_us = rtt_us;
		v->rtt_ns_at = now;
		count(WEIR_CNT_RTT);
	}
}

/* Counts one skb in `map` (a constant at each call site, so the verifier inlines lookups). */
static __always_inline void count_skb(struct __sk_buff *skb, void *map, struct flow_key *k,
				      struct flow_value *found, __u32 len, __u64 segs, __u16 flags,
				      __u32 sampling, const struct l2 *macs, __u64 now,
				      __u32 rtt_us, __u16 fgen)
{
	int due;
	if (found) {
		/* Looked up already, for its cached filter decision. */
		remember_filter(found, fgen, sampling);
		due = accumulate(found, now, len, segs, flags, sampling, macs, rtt_us);
	} else {
		due = update_flow(skb, map, k, len, segs, flags, sampling, macs, now, rtt_us, fgen);
	}
	if (due)
		rtt_to_reverse(map, k, rtt_us, now);
}

/* Whether two keys are equal, word by word (keys are zeroed before they are filled, so
 * their padding is equal too). */
typedef __u32 __attribute__((may_alias)) key_word;

static __always_inline int same_key(const struct flow_key *a, const struct flow_key *b)
{
	const key_word *x = (const key_word *)a;
	const key_word *y = (const key_word *)b;
#pragma unroll
	for (int i = 0; i < (int)(sizeof(*a) / 4); i++)
		if (x[i] != y[i])
			return 0;
	return 1;
}

/* The flow of `k` in the active map (two call sites with constant maps, see count_skb). */
static __always_inline struct flow_value *active_flow(__u32 active, const struct flow_key *k)
{
	if (active)
		return bpf_map_lookup_elem(&flows_b, k);
	return bpf_map_lookup_elem(&flows_a, k);
}

/* Whether `addr` is in the network `net`/`mask` (a zero mask matches every address). */
static __always_inline int in_net(const __u8 *addr, const __u8 *net, const __u8 *mask)
{
	const __u32 *a = (const __u32 *)addr;
	const __u32 *n = (const __u32 *)net;
	const __u32 *m = (const __u32 *)mask;
	return (a[0] & m[0]) == n[0] && (a[1] & m[1]) == n[1] && (a[2] & m[2]) == n[2] &&
	       (a[3] & m[3]) == n[3];
}

static __always_inline int in_range(__u16 port, const struct filter_rule *r)
{
	return port >= r->port_min && port <= r->port_max;
}

static __always_inline int rule_matches(const struct filter_rule *r, const struct flow_key *k,
					__u16 flags, int is_drop)
{
	if (r->drops_only && !is_drop)
		return 0;
	if (r->proto && r->proto != k->proto)
		return 0;
	if (r->direction && r->direction != k->direction + 1)
		return 0;
	if (r->port_max && !in_range(k->src_port, r) && !in_range(k->dst_port, r))
		return 0;
	if (r->tcp_flags && !(flags & r->tcp_flags))
		return 0;
	int s = in_net(k->src_addr, r->cidr, r->cidr_mask);
	int d = in_net(k->dst_addr, r->cidr, r->cidr_mask);
	if (s && in_net(k->dst_addr, r->peer, r->peer_mask))
		return 1;
	if (d && in_net(k->src_addr, r->peer, r->peer_mask))
		return 1;
	return 0;
}

/* Applies the filter rules: returns 1 to keep the packet (with `*sampling` set to the rule's
 * sampling when it has one), 0 to leave it out. A global function: the verifier checks it once,
 * on its own, instead of once per path into it (the rule loop would otherwise multiply the
 * paths through every program). `flags_drop` is the TCP flags, plus bit 16 for a drop. */
__attribute__((noinline)) int weir_filter(const struct flow_key *k, __u32 flags_drop, __u32 count,
					  __u32 fallback, __u32 *sampling)
{
	if (!k || !sampling)
		return 1;
	__u16 flags = flags_drop & 0xffff;
	int is_drop = (flags_drop >> 16) & 1;
	/* The first matching sample rule's 1-in-N (`sampled` once one matched). */
	int sampled = 0;
	__u32 pick = 0;
	int keep = fallback == WEIR_FILTER_ACCEPT;
	for (__u32 i = 0; i < WEIR_MAX_FILTERS; i++) {
		if (i >= count)
			break;
		__u32 idx = i;
		struct filter_rule *r = bpf_map_lookup_elem(&filters, &idx);
		if (!r)
			break;
		if (!rule_matches(r, k, flags, is_drop))
			continue;
		if (r->action == WEIR_FILTER_SAMPLE) {
			if (!sampled) {
				sampled = 1;
				pick = r->sampling;
			}
			continue;
		}
		if (r->action == WEIR_FILTER_REJECT)
			return 0;
		if (r->sampling > 1)
			*sampling = r->sampling;
		keep = 1;
		break;
	}
	if (keep && pick > *sampling)
		*sampling = pick;
	return keep;
}

static __always_inline int try_filter(const struct weir_config *cfg, const struct flow_key *k,
				      __u16 flags, int is_drop, __u32 *sampling)
{
	return weir_filter(k, (__u32)flags | ((__u32)is_drop << 16), cfg->filter_count,
			   cfg->filter_default, sampling);
}

/* Sends the payload of a DNS packet (port 53) to user space, which parses and matches it. */
static __always_inline void send_dns(struct __sk_buff *skb, const struct flow_key *k, __u32 l7off,
				     __u64 now)
{
	if (l7off == 0 || skb->len <= l7off)
		return;
	__u32 avail = skb->len - l7off;
	/* A provable bound of 1..WEIR_DNS_MAX for the verifier. */
	__u32 n = ((avail - 1) & (WEIR_DNS_MAX - 1)) + 1;
	if (avail > WEIR_DNS_MAX)
		n = WEIR_DNS_MAX;
	struct dns_event *e = bpf_ringbuf_reserve(&dns_events, sizeof(*e), 0);
	if (!e) {
		count(WEIR_CNT_DNS_LOST);
		return;
	}
	__builtin_memcpy(&e->key, k, sizeof(*k));
	e->ts_ns = now;
	e->len = 0;
	if (bpf_skb_load_bytes(skb, l7off, e->payload, n) == 0)
		e->len = n;
	bpf_ringbuf_submit(e, 0);
}

static __always_inline int handle(struct __sk_buff *skb, __u8 direction)
{
	struct flow_key k;
	__u16 flags = 0;
	__u32 zero = 0;
	__u32 sampling = 0;
	__u32 active = 0;
	__u32 l7off = 0;
	__u64 now, segs;

	struct weir_config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return TC_ACT_UNSPEC;
	/* The configuration's generation, read before the rest: a decision cached under it was
	 * made with settings no older than it (see the filter block below). */
	__u32 gen32 = *(volatile __u32 *)&cfg->filter_gen;
	sampling = cfg->sampling;
	active = cfg->active_map;
	/* Without filter rules, sampling is decided before any parsing. */
	if (cfg->filter_count == 0 && sampling > 1 && (bpf_get_prandom_u32() % sampling) != 0) {
		count(WEIR_CNT_SAMPLED_OUT);
		return TC_ACT_UNSPEC;
	}

	struct l2 macs = {};
	__builtin_memset(&k, 0, sizeof(k));
	if (try_parse_direct(skb, &k, &flags, &macs, &l7off) != 0) {
		__builtin_memset(&k, 0, sizeof(k));
		flags = 0;
		l7off = 0;
		if (try_parse(skb, &k, &flags, &macs, &l7off) < 0)
			count(WEIR_CNT_TRUNCATED);
	}
	k.ifindex = skb->ifindex;
	k.direction = direction;

	/* With filter rules, a flow's packets reuse the decision its first admitted one cached
	 * in the flow (this CPU's slot) while the configuration stays, instead of walking the
	 * rules again; packets with a TCP flag some rule names always walk them. A decision made
	 * while a configuration is being written is cached under the generation read before it,
	 * which the write ends: user space changes the rules' count, default and flags in two
	 * writes (the count at 0 in the first), so no cached decision outlives the second. */
	struct flow_value *found = NULL;
	__u16 fgen = 0;
	__u16 gen = (__u16)gen32;
	if (cfg->filter_count != 0) {
		int plain = gen != 0 && !(flags & cfg->filter_flags);
		struct refused *rf = NULL;
		if (plain) {
			rf = bpf_map_lookup_elem(&last_refused, &zero);
			if (rf && rf->gen == gen32 && same_key(&rf->key, &k)) {
				count(WEIR_CNT_FILTERED);
				return TC_ACT_UNSPEC;
			}
			found = active_flow(active, &k);
		}
		if (found && found->filter_gen == gen) {
			sampling = found->filter_sampling;
		} else {
			if (!try_filter(cfg, &k, flags, 0, &sampling)) {
				if (rf) {
					rf->key = k;
					rf->gen = gen32;
				}
				count(WEIR_CNT_FILTERED);
				return TC_ACT_UNSPEC;
			}
			if (plain)
				fgen = gen;
		}
		if (sampling > 1 && (bpf_get_prandom_u32() % sampling) != 0) {
			count(WEIR_CNT_SAMPLED_OUT);
			return TC_ACT_UNSPEC;
		}
	}

	now = packet_now(cfg);
	/* DNS latency is a difference of two sightings: those read the precise clock. */
	if (cfg->dns && (k.proto == IPPROTO_UDP || k.proto == IPPROTO_TCP) &&
	    (k.src_port == 53 || k.dst_port == 53))
		send_dns(skb, &k, l7off, precise_now());
	segs = skb->gso_segs;
	if (segs == 0)
		segs = 1;
	__u32 rtt_us = 0;
	if (direction == WEIR_DIR_EGRESS && k.proto == IPPROTO_TCP && cfg->rtt)
		rtt_us = sender_rtt_us(skb);
	/* Two call sites with constant maps: the verifier inlines lookups only when it knows
	 * the map, so no map pointer is chosen at run time. */
	if (active)
		count_skb(skb, &flows_b, &k, found, skb->len, segs, flags, sampling, &macs, now,
			  rtt_us, fgen);
	else
		count_skb(skb, &flows_a, &k, found, skb->len, segs, flags, sampling, &macs, now,
			  rtt_us, fgen);
	return TC_ACT_UNSPEC;
}

/* Run by user space (BPF_PROG_TEST_RUN) to calibrate the tick clock: returns the low half of
 * jiffies for a 14-byte packet, the high half for a longer one. Never attached. */
SEC("classifier")
int weir_clock(struct __sk_buff *skb)
{
	if (!jiffies_clock || !bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_jiffies64))
		return 0;
	__u64 j = bpf_jiffies64();
	return skb->len > 14 ? (__u32)(j >> 32) : (__u32)j;
}

SEC("classifier")
int weir_ingress(struct __sk_buff *skb)
{
	return handle(skb, WEIR_DIR_INGRESS);
}

SEC("classifier")
int weir_egress(struct __sk_buff *skb)
{
	return handle(skb, WEIR_DIR_EGRESS);
}

/* ---- tracing program: drops ----------------------------------------------------------------- */

/* Local views of kernel types: CO-RE relocates every field by name against the running
 * kernel's BTF, so the layout here does not matter. The tracing program reads them with plain
 * loads: tp_btf arguments are typed pointers the verifier checks against the kernel's BTF,
 * far cheaper than a bpf_probe_read_kernel call per field. */
struct ns_common___weir {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct net___weir {
	struct ns_common___weir ns;
} __attribute__((preserve_access_index));

struct net_device___weir {
	int ifindex;
	struct {
		struct net___weir *net;
	} nd_net;
} __attribute__((preserve_access_index));

struct sk_buff___weir {
	struct net_device___weir *dev;
	unsigned int len;
	int skb_iif;
	__be16 protocol;
	__u16 network_header;
	__u16 mac_header;
	unsigned char *head;
	unsigned char *data;
} __attribute__((preserve_access_index));

#define NO_HEADER 0xffff

/* Fills the key's addresses, protocol, ports and flags from the headers at `nh` (kernel
 * memory). Returns 0, or -1 when they cannot be read. */
static __always_inline int try_parse_kernel(const unsigned char *nh, __u16 proto,
					    struct flow_key *k, __u16 *flags)
{
	const unsigned char *l4;
	__u8 b[16]; /* l4_len() masked to 15 for the verifier */

	if (proto == ETH_P_IP) {
		struct ip4 ip;
		if (bpf_probe_read_kernel(&ip, sizeof(ip), nh) < 0)
			return -1;
		map_v4(k->src_addr, ip.saddr);
		map_v4(k->dst_addr, ip.daddr);
		k->proto = ip.protocol;
		if (bpf_ntohs(ip.frag_off) & 0x1fff)
			return 0;
		l4 = nh + (ip.vihl & 0x0f) * 4;
	} else {
		struct ip6 ip;
		if (bpf_probe_read_kernel(&ip, sizeof(ip), nh) < 0)
			return -1;
		__builtin_memcpy(k->src_addr, ip.saddr, 16);
		__builtin_memcpy(k->dst_addr, ip.daddr, 16);
		k->proto = ip.nexthdr;
		l4 = nh + sizeof(ip);
	}
	__u32 n = l4_len(k->proto);
	if (n == 0)
		return 0;
	if (bpf_probe_read_kernel(b, n & 15, l4) < 0)
		return -1;
	l4_fields(k, b, flags);
	return 0;
}

/* Adds one dropped skb to its flow, creating a drops-only flow when none is there. */
static __always_inline void add_drop(void *map, struct flow_key *k, __u32 len, __u32 reason,
				     __u32 sampling, const struct l2 *macs, __u64 now)
{
	struct flow_value *v = bpf_map_lookup_elem(map, k);
	if (!v) {
		struct flow_value nv = {
			.drop_bytes = len,
			.drop_packets = 1,
			.drop_reason = reason,
			.drop_ns = now,
			.sampling = sampling,
		};
		__builtin_memcpy(nv.src_mac, macs->src, 6);
		__builtin_memcpy(nv.dst_mac, macs->dst, 6);
		long err = bpf_map_update_elem(map, k, &nv, BPF_NOEXIST);
		if (err == 0)
			return;
		v = bpf_map_lookup_elem(map, k);
		if (!v) {
			count(WEIR_CNT_MAP_FULL);
			send_direct(k, &nv);
			return;
		}
	}
	v->drop_bytes += len;
	v->drop_packets += 1;
	v->drop_reason = reason;
	v->drop_ns = now;
	/* As in accumulate: the record keeps its highest 1-in-N. */
	if (sampling > v->sampling)
		v->sampling = sampling;
}

SEC("tp_btf/kfree_skb")
int weir_kfree_skb(unsigned long long *ctx)
{
	struct sk_buff___weir *skb = (void *)ctx[0];
	__u32 reason = (__u32)ctx[2];
	__u32 zero = 0;
	__u16 flags = 0;
	struct flow_key k;
	struct l2 macs = {};

	struct weir_config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || reason == 0 || reason == cfg->consumed_reason)
		return 0;
	struct net_device___weir *dev = skb->dev;
	if (!dev)
		return 0;
	struct net___weir *net = dev->nd_net.net;
	if (!net || net->ns.inum != cfg->netns_ino)
		return 0;
	__u16 proto = bpf_ntohs(skb->protocol);
	if (proto != ETH_P_IP && proto != ETH_P_IPV6)
		return 0;
	unsigned char *head = skb->head;
	unsigned long data = (unsigned long)skb->data;
	__u16 nh = skb->network_header;
	__u16 mh = skb->mac_header;
	__u32 len = skb->len;
	if (nh == NO_HEADER)
		return 0;

	__builtin_memset(&k, 0, sizeof(k));
	if (try_parse_kernel(head + nh, proto, &k, &flags) < 0)
		return 0;
	k.eth_type = proto;
	k.ifindex = dev->ifindex;
	k.direction = skb->skb_iif == (int)k.ifindex ? WEIR_DIR_INGRESS : WEIR_DIR_EGRESS;
	/* Count the frame as the interface does: with its link-layer header. */
	if (mh != NO_HEADER && mh < nh) {
		unsigned long mac = (unsigned long)head + mh;
		if (data > mac)
			len += data - mac;
		bpf_probe_read_kernel(&macs, 12, head + mh);
	}
	__u32 sampling = 0;
	if (cfg->filter_count != 0) {
		if (!try_filter(cfg, &k, flags, 1, &sampling)) {
			count(WEIR_CNT_FILTERED);
			return 0;
		}
		if (sampling > 1 && (bpf_get_prandom_u32() % sampling) != 0)
			return 0;
	}
	count(WEIR_CNT_DROPS);
	__u64 now = bpf_ktime_get_ns();
	if (cfg->active_map)
		add_drop(&flows_b, &k, len, reason, sampling, &macs, now);
	else
		add_drop(&flows_a, &k, len, reason, sampling, &macs, now);
	return 0;
}
