// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
//
// fl_refuse: an sk_lookup program that refuses a fraction of new TCP
// connections to a port. Returning SK_DROP fails the listener lookup, so
// the kernel answers the SYN with a RST at once ("connection refused"), a
// decision made once per connection, before any socket exists. Established
// connections are never touched: sk_lookup runs only for new ones.

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#define PPM 1000000

struct refuse_config {
	__u32 refuse_ppm; // probability, parts per million
	__u32 port;       // host order; 0 = all ports
};

enum refuse_stat {
	REFUSE_SEEN = 0, // new TCP connections to the port
	REFUSE_REFUSED,
	REFUSE_STAT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct refuse_config);
} refuse_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, REFUSE_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} refuse_stats SEC(".maps");

static __always_inline void count(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&refuse_stats, &stat);
	if (v)
		*v += 1;
}

SEC("sk_lookup")
int fl_refuse(struct bpf_sk_lookup *ctx)
{
	__u32 zero = 0;
	struct refuse_config *cfg = bpf_map_lookup_elem(&refuse_cfg, &zero);

	if (!cfg || ctx->protocol != IPPROTO_TCP)
		return SK_PASS;
	if (cfg->port && ctx->local_port != cfg->port)
		return SK_PASS;
	count(REFUSE_SEEN);
	if (cfg->refuse_ppm && bpf_get_prandom_u32() % PPM < cfg->refuse_ppm) {
		count(REFUSE_REFUSED);
		return SK_DROP;
	}
	return SK_PASS;
}

char __license[] SEC("license") = "Dual MIT/GPL";
