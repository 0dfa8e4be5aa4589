// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
//
// fl_steer: an sk_lookup program that hands new inbound TCP connections for
// one port of a network namespace to faultline's proxy listener.
//
// One copy of this program (with its own maps) is loaded per fault and
// attached to the target netns with an fd-owned bpf_link, so it disappears
// with the daemon. It fails open: when the proxy listener is gone the
// SOCKMAP slot is empty and the lookup continues to the application.

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#define AF_INET 2
#define AF_INET6 10

// steer_config is written once by user space before attaching.
struct steer_config {
	__u32 port;     // target port, host byte order (as ctx->local_port)
	__u32 skip_ip4; // the proxy's upstream source address, network byte order
};

enum steer_stat {
	STAT_STEERED = 0,  // handed to the proxy
	STAT_BYPASSED,     // the proxy's own upstream connection
	STAT_NO_LISTENER,  // slot empty: fail open to the application
	STAT_ASSIGN_ERROR, // bpf_sk_assign refused: fail open
	STAT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct steer_config);
} steer_cfg SEC(".maps");

// Slot 0 holds the IPv4 proxy listener, slot 1 the IPv6 one.
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} proxy_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} steer_stats SEC(".maps");

static __always_inline void count(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&steer_stats, &stat);
	if (v)
		*v += 1;
}

SEC("sk_lookup")
int fl_steer(struct bpf_sk_lookup *ctx)
{
	__u32 zero = 0, slot;
	struct steer_config *cfg;
	struct bpf_sock *sk;
	long err;

	cfg = bpf_map_lookup_elem(&steer_cfg, &zero);
	if (!cfg || ctx->protocol != IPPROTO_TCP || ctx->local_port != cfg->port)
		return SK_PASS;

	if (ctx->family == AF_INET) {
		if (cfg->skip_ip4 && ctx->remote_ip4 == cfg->skip_ip4) {
			count(STAT_BYPASSED);
			return SK_PASS;
		}
		slot = 0;
	} else if (ctx->family == AF_INET6) {
		slot = 1;
	} else {
		return SK_PASS;
	}

	sk = bpf_map_lookup_elem(&proxy_socks, &slot);
	if (!sk) {
		count(STAT_NO_LISTENER);
		return SK_PASS;
	}
	err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	count(err ? STAT_ASSIGN_ERROR : STAT_STEERED);
	return SK_PASS;
}

char __license[] SEC("license") = "Dual MIT/GPL";
