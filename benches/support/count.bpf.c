// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Baseline for benches/capture.rs (section `kernel`): a program that counts packets in a
 * per-CPU array, attached with tc on the hooks weir uses, so weir's run time per packet is
 * read against the least a TC program that keeps anything costs there. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "Dual BSD/GPL";
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} packets SEC(".maps");
SEC("tc")
int wb_count(struct __sk_buff *skb)
{
	__u32 k = 0;
	__u64 *c = bpf_map_lookup_elem(&packets, &k);
	if (c)
		*c += 1;
	return TC_ACT_UNSPEC;
}
