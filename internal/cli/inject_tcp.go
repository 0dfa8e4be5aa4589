package cli

import (
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

type tcpParams struct {
	targetParams
	port   int
	toxics []string
}

func newCmdInjectTCP(g *globals) *cobra.Command {
	var p tcpParams
	cmd := &cobra.Command{
		Use:   "tcp",
		Short: "Apply Toxiproxy-style toxics to the bytes of any TCP port",
		Long: `Relay the connections of a TCP port (a database, a cache, a TLS service) and
apply toxics to their bytes, upstream (what clients send) or downstream (what
the application answers). Blocks until the fault ends and prints its counters.
Ctrl-C revokes the fault.

A toxic is DIRECTION:KIND=VALUE[,key=value...], repeatable, each kind once per
direction; toxicity=F applies it to that share of connections:
  downstream:latency=50ms,jitter=10ms   each chunk 50ms ± 10ms late
  downstream:bandwidth=1048576          at most 1 MiB/s
  upstream:timeout=5s                   deliver nothing, close after 5s (0: hold)
  downstream:reset_peer=2s              RST to the client 2s after it connects
  downstream:slow_close=1s              the FIN 1s late
  downstream:limit_data=1000            close after 1000 bytes
  downstream:slicer=64,variation=16,delay=1ms   writes of 64 ± 16 bytes, 1ms apart

Examples:
  faultline inject tcp --netns /run/netns/cache --port 6379 --toxic downstream:latency=50ms,jitter=10ms --duration 30s
  faultline inject tcp --local -n shop --service db --port 5432 --toxic downstream:reset_peer=3s,toxicity=0.5 --duration 1m`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, err := p.request()
			if err != nil {
				return err
			}
			return p.run(cmd.Context(), g, req)
		},
	}
	f := cmd.Flags()
	p.targetParams.bind(f)
	f.IntVar(&p.port, "port", 0, "the TCP port (required)")
	f.StringArrayVar(&p.toxics, "toxic", nil, "a toxic, DIRECTION:KIND=VALUE[,key=value...]; repeatable")
	return cmd
}

func (p *tcpParams) request() (*pb.InjectRequest, error) {
	req, err := p.targetParams.request(p.port, p.sel.given())
	if err != nil {
		return nil, err
	}
	if len(p.toxics) == 0 {
		return nil, usagef("give at least one --toxic, e.g. --toxic downstream:latency=50ms")
	}
	tf := &pb.TcpFault{Port: uint32(p.port)}
	for _, s := range p.toxics {
		dir, t, err := parseToxic(s)
		if err != nil {
			return nil, err
		}
		if dir == "upstream" {
			tf.Upstream = append(tf.Upstream, t)
		} else {
			tf.Downstream = append(tf.Downstream, t)
		}
	}
	req.Fault = &pb.InjectRequest_Tcp{Tcp: tf}
	return req, nil
}

// parseToxic reads DIRECTION:KIND=VALUE[,key=value...].
func parseToxic(s string) (string, *pb.Toxic, error) {
	bad := func(format string, args ...any) (string, *pb.Toxic, error) {
		return "", nil, usagef("--toxic %q: "+format, append([]any{s}, args...)...)
	}
	dir, rest, ok := strings.Cut(s, ":")
	if !ok || (dir != "upstream" && dir != "downstream") {
		return bad("must start with upstream: or downstream:")
	}
	kv := map[string]string{}
	var kind string
	for i, part := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		if i == 0 {
			kind = k
		}
		if _, dup := kv[k]; dup {
			return bad("%s given twice", k)
		}
		kv[k] = v
	}
	t := &pb.Toxic{}
	var perr error
	dur := func(key string) *durationpb.Duration {
		v, ok := kv[key]
		delete(kv, key)
		if !ok || perr != nil {
			return nil
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			perr = usagef("--toxic %q: %s: %v", s, key, err)
		}
		return durationpb.New(d)
	}
	num := func(key string) uint64 {
		v, ok := kv[key]
		delete(kv, key)
		if !ok || perr != nil {
			return 0
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			perr = usagef("--toxic %q: %s must be a whole number of bytes, got %q", s, key, v)
		}
		return n
	}
	if v, ok := kv["toxicity"]; ok {
		delete(kv, "toxicity")
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return bad("toxicity must be a number in [0, 1], got %q", v)
		}
		t.Toxicity = &x
	}
	switch kind {
	case "latency":
		t.Kind = &pb.Toxic_Latency{Latency: &pb.LatencyToxic{Latency: dur("latency"), Jitter: dur("jitter")}}
	case "bandwidth":
		t.Kind = &pb.Toxic_Bandwidth{Bandwidth: &pb.BandwidthToxic{Rate: num("bandwidth")}}
	case "timeout":
		t.Kind = &pb.Toxic_Timeout{Timeout: &pb.TimeoutToxic{Timeout: dur("timeout")}}
	case "reset_peer":
		t.Kind = &pb.Toxic_ResetPeer{ResetPeer: &pb.ResetPeerToxic{Timeout: dur("reset_peer")}}
	case "slow_close":
		t.Kind = &pb.Toxic_SlowClose{SlowClose: &pb.SlowCloseToxic{Delay: dur("slow_close")}}
	case "limit_data":
		t.Kind = &pb.Toxic_LimitData{LimitData: &pb.LimitDataToxic{Bytes: num("limit_data")}}
	case "slicer":
		t.Kind = &pb.Toxic_Slicer{Slicer: &pb.SlicerToxic{AverageSize: num("slicer"), SizeVariation: num("variation"), Delay: dur("delay")}}
	default:
		return bad("unknown toxic %q: latency, bandwidth, timeout, reset_peer, slow_close, limit_data or slicer", kind)
	}
	if perr != nil {
		return "", nil, perr
	}
	for k := range kv {
		return bad("%s takes no %q", kind, k)
	}
	return dir, t, nil
}
