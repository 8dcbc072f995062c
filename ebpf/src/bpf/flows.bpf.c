// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * weir flow capture: a TC classifier on ingress and egress that aggregates every frame into a
 * per-CPU flow map. Two maps are used in turn: user space flips `config.active_map`, waits for
 * programs in flight to finish, and drains the idle map with no writer racing it, so no packet
 * is lost between lookup and delete. When the active map is full, the packet is sent as a
 * one-packet flow through the ring buffer; every such case is counted.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

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
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, WEIR_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8
#define IPPROTO_ICMPV6_ 58
#define IPPROTO_SCTP_ 132

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

/* Reads the transport ports (or ICMP type/code) and TCP flags at offset `off`.
 * Returns 0, or -1 when the headers are cut short. */
static __always_inline int try_parse_l4(struct __sk_buff *skb, __u32 off, struct flow_key *k,
					__u16 *flags)
{
	__u8 b[14];

	switch (k->proto) {
	case IPPROTO_TCP:
		if (bpf_skb_load_bytes(skb, off, b, 14) < 0)
			return -1;
		k->src_port = ((__u16)b[0] << 8) | b[1];
		k->dst_port = ((__u16)b[2] << 8) | b[3];
		*flags = b[13] | ((__u16)(b[12] & 1) << 8);
		return 0;
	case IPPROTO_UDP:
	case IPPROTO_SCTP_:
		if (bpf_skb_load_bytes(skb, off, b, 4) < 0)
			return -1;
		k->src_port = ((__u16)b[0] << 8) | b[1];
		k->dst_port = ((__u16)b[2] << 8) | b[3];
		return 0;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6_:
		if (bpf_skb_load_bytes(skb, off, b, 2) < 0)
			return -1;
		k->icmp_type = b[0];
		k->icmp_code = b[1];
		return 0;
	default:
		return 0;
	}
}

/* Fills the key from the frame's headers. Returns 0, or -1 when the headers are cut short. */
static __always_inline int try_parse(struct __sk_buff *skb, struct flow_key *k, __u16 *flags,
				     struct l2 *macs)
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
		return try_parse_l4(skb, off, k, flags);
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
		return try_parse_l4(skb, off, k, flags);
	}
	return 0;
}

/* Fast path: reads the headers straight from the linear packet data. Returns 0 when done,
 * 1 when the slow path must parse (headers not linear, VLAN, IPv6 extension headers, IPv4
 * options or fragments). */
static __always_inline int try_parse_direct(struct __sk_buff *skb, struct flow_key *k, __u16 *flags,
					    struct l2 *macs)
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
		*flags = l4[13] | ((__u16)(l4[12] & 1) << 8);
		break;
	case IPPROTO_UDP:
	case IPPROTO_SCTP_:
		if ((void *)(l4 + 4) > data_end)
			return 1;
		k->src_port = ((__u16)l4[0] << 8) | l4[1];
		k->dst_port = ((__u16)l4[2] << 8) | l4[3];
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
static __always_inline void accumulate(struct flow_value *v, __u64 now, __u32 len, __u64 segs,
				       __u16 flags, __u32 sampling, const struct l2 *macs)
{
	if (v->first_seen_ns == 0) {
		v->first_seen_ns = now;
		__builtin_memcpy(v->src_mac, macs->src, 6);
		__builtin_memcpy(v->dst_mac, macs->dst, 6);
	}
	v->last_seen_ns = now;
	v->bytes += len;
	v->packets += segs;
	v->skbs += 1;
	v->tcp_flags |= flags;
	v->sampling = sampling;
}

/* Adds one skb to its flow in `map`, inserting the flow if new; the ring buffer takes it
 * when the map is full. */
static __always_inline void update_flow(void *map, struct flow_key *k, __u32 len, __u64 segs,
					__u16 flags, __u32 sampling, const struct l2 *macs, __u64 now)
{
	struct flow_value *v = bpf_map_lookup_elem(map, k);
	if (v) {
		accumulate(v, now, len, segs, flags, sampling, macs);
		return;
	}
	struct flow_value nv = {
		.first_seen_ns = now,
		.last_seen_ns = now,
		.bytes = len,
		.packets = segs,
		.skbs = 1,
		.sampling = sampling,
		.tcp_flags = flags,
	};
	__builtin_memcpy(nv.src_mac, macs->src, 6);
	__builtin_memcpy(nv.dst_mac, macs->dst, 6);
	long err = bpf_map_update_elem(map, k, &nv, BPF_NOEXIST);
	if (err == 0)
		return;
	if (err == -17 /* EEXIST: another CPU inserted it meanwhile */) {
		v = bpf_map_lookup_elem(map, k);
		if (v) {
			accumulate(v, now, len, segs, flags, sampling, macs);
			return;
		}
	}
	count(WEIR_CNT_MAP_FULL);
	send_direct(k, &nv);
}

static __always_inline int handle(struct __sk_buff *skb, __u8 direction)
{
	struct flow_key k;
	__u16 flags = 0;
	__u32 zero = 0;
	__u32 sampling = 0;
	__u32 active = 0;
	__u64 now, segs;

	struct weir_config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (cfg) {
		sampling = cfg->sampling;
		active = cfg->active_map;
	}
	if (sampling > 1 && (bpf_get_prandom_u32() % sampling) != 0) {
		count(WEIR_CNT_SAMPLED_OUT);
		return TC_ACT_UNSPEC;
	}

	struct l2 macs = {};
	__builtin_memset(&k, 0, sizeof(k));
	if (try_parse_direct(skb, &k, &flags, &macs) != 0) {
		__builtin_memset(&k, 0, sizeof(k));
		flags = 0;
		if (try_parse(skb, &k, &flags, &macs) < 0)
			count(WEIR_CNT_TRUNCATED);
	}
	k.ifindex = skb->ifindex;
	k.direction = direction;

	now = bpf_ktime_get_ns();
	segs = skb->gso_segs;
	if (segs == 0)
		segs = 1;
	/* Two call sites with constant maps: the verifier inlines lookups only when it knows
	 * the map, so no map pointer is chosen at run time. */
	if (active)
		update_flow(&flows_b, &k, skb->len, segs, flags, sampling, &macs, now);
	else
		update_flow(&flows_a, &k, skb->len, segs, flags, sampling, &macs, now);
	return TC_ACT_UNSPEC;
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
