// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
//
// fl_drop: a tcx ingress program that drops a fraction of the inbound
// packets to a port and protocol. Attached with fd-owned tcx links to the
// target namespace's interfaces; packets that do not match go on to the
// next program (TCX_NEXT), so a CNI's own programs keep working. The rate
// lives in a map and can change while the fault runs.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define TCX_NEXT TC_ACT_UNSPEC
#define TCX_DROP TC_ACT_SHOT
#define PPM 1000000

struct drop_config {
	__u32 drop_ppm; // drop probability, parts per million
	__u16 port;     // destination port, host order; 0 = all
	__u8 protocol;  // IPPROTO_TCP, IPPROTO_UDP, or 0 = all
	__u8 _pad;
};

enum drop_stat {
	DROP_SEEN = 0, // matching packets
	DROP_DROPPED,
	DROP_STAT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct drop_config);
} drop_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} drop_stats SEC(".maps");

static __always_inline void count(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&drop_stats, &stat);
	if (v)
		*v += 1;
}

// l4_dport returns the destination port of the TCP or UDP header at off,
// or -1 when there is none. Both headers keep it at byte 2.
static __always_inline int l4_dport(struct __sk_buff *skb, __u32 off, __u8 proto)
{
	__be16 port;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return -1;
	if (bpf_skb_load_bytes(skb, off + 2, &port, sizeof(port)) < 0)
		return -1;
	return bpf_ntohs(port);
}

SEC("tcx/ingress")
int fl_drop(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u32 zero = 0;
	__u8 proto;
	__u32 off;
	int dport = -1;
	struct drop_config *cfg = bpf_map_lookup_elem(&drop_cfg, &zero);

	if (!cfg || (void *)(eth + 1) > data_end)
		return TCX_NEXT;

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = (void *)(eth + 1);
		if ((void *)(iph + 1) > data_end)
			return TCX_NEXT;
		proto = iph->protocol;
		off = sizeof(*eth) + iph->ihl * 4;
		if (!(iph->frag_off & bpf_htons(0x1fff)))
			dport = l4_dport(skb, off, proto);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			return TCX_NEXT;
		proto = ip6->nexthdr;
		off = sizeof(*eth) + sizeof(*ip6);
		dport = l4_dport(skb, off, proto);
	} else {
		return TCX_NEXT; // ARP and other non-IP traffic always pass
	}

	if (cfg->protocol && proto != cfg->protocol)
		return TCX_NEXT;
	if (cfg->port && dport != cfg->port)
		return TCX_NEXT;

	count(DROP_SEEN);
	if (cfg->drop_ppm && bpf_get_prandom_u32() % PPM < cfg->drop_ppm) {
		count(DROP_DROPPED);
		return TCX_DROP;
	}
	return TCX_NEXT;
}

char __license[] SEC("license") = "Dual MIT/GPL";
