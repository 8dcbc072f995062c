// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Baseline for benches/capture.rs (section `kernel`): a program that does nothing, attached
 * with tc on the hooks weir uses, so weir's run time per packet is read against what any TC
 * program costs there (with bpf_stats on, the accounting itself is most of it). */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "Dual BSD/GPL";
SEC("tc")
int wb_noop(struct __sk_buff *skb)
{
	return TC_ACT_UNSPEC;
}
