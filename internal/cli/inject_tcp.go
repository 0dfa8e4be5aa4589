package cli

import (
	"os"
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
	tls    tlsParams
}

// tlsParams are the --sni and --tls-* flags.
type tlsParams struct {
	serverNames    []string
	rate           float64
	handshakeDelay time.Duration
	reset          bool
	alert          string
	certificate    string
	caCert, caKey  string
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
  faultline inject tcp --local -n shop --service db --port 5432 --toxic downstream:reset_peer=3s,toxicity=0.5 --duration 1m

TLS services: --sni narrows the fault to the connections whose ClientHello
names a matching server (exact, or *.suffix; repeatable), and one --tls-*
action faults their handshake, without the service's keys:
  --tls-handshake-delay 2s   hold the ClientHello 2s
  --tls-reset                RST once the ClientHello arrived
  --tls-alert NAME           a fatal alert: handshake_failure, unknown_ca, protocol_version, ...
  --tls-certificate DEFECT   complete the handshake with a certificate of the fault's own:
                             expired, wrong_name or unknown_ca (with --tls-ca-cert/--tls-ca-key
                             FILEs, expired and wrong_name ones are issued by that CA)
  faultline inject tcp --netns /run/netns/pay --port 443 --sni '*.pay.test' --tls-certificate expired --duration 1m`,
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
	f.StringArrayVar(&p.tls.serverNames, "sni", nil, "fault only TLS connections to this server name (exact or *.suffix); repeatable")
	f.Float64Var(&p.tls.rate, "tls-rate", 1, "share of matching handshakes the --tls-* action applies to")
	f.DurationVar(&p.tls.handshakeDelay, "tls-handshake-delay", 0, "hold each matching ClientHello this long")
	f.BoolVar(&p.tls.reset, "tls-reset", false, "reset matching connections once their ClientHello arrived")
	f.StringVar(&p.tls.alert, "tls-alert", "", "answer matching ClientHellos with this fatal TLS alert")
	f.StringVar(&p.tls.certificate, "tls-certificate", "", "complete matching handshakes with a certificate that is expired, wrong_name or unknown_ca")
	f.StringVar(&p.tls.caCert, "tls-ca-cert", "", "PEM file of the CA that issues --tls-certificate's certificates")
	f.StringVar(&p.tls.caKey, "tls-ca-key", "", "PEM file of that CA's key")
	return cmd
}

func (p *tcpParams) request() (*pb.InjectRequest, error) {
	req, err := p.targetParams.request(p.port, p.sel.given())
	if err != nil {
		return nil, err
	}
	tf := &pb.TcpFault{Port: uint32(p.port)}
	if tf.Tls, err = p.tls.proto(); err != nil {
		return nil, err
	}
	if len(p.toxics) == 0 && (tf.Tls == nil || tf.Tls.Action == nil) {
		return nil, usagef("give at least one --toxic, e.g. --toxic downstream:latency=50ms, or a --tls-* action")
	}
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

// proto builds the TlsFault of the flags; nil when none was given.
func (t *tlsParams) proto() (*pb.TlsFault, error) {
	tf := &pb.TlsFault{ServerNames: t.serverNames}
	if t.rate != 1 {
		tf.Rate = &t.rate
	}
	actions := 0
	if t.handshakeDelay != 0 {
		actions++
		tf.Action = &pb.TlsFault_HandshakeDelay{HandshakeDelay: durationpb.New(t.handshakeDelay)}
	}
	if t.reset {
		actions++
		tf.Action = &pb.TlsFault_Reset_{Reset_: &pb.TlsReset{}}
	}
	if t.alert != "" {
		actions++
		tf.Action = &pb.TlsFault_Alert{Alert: t.alert}
	}
	if t.certificate != "" {
		actions++
		c := &pb.TlsCertificate{Defect: t.certificate}
		if (t.caCert == "") != (t.caKey == "") {
			return nil, usagef("give --tls-ca-cert and --tls-ca-key together")
		}
		if t.caCert != "" {
			cert, err := os.ReadFile(t.caCert)
			if err != nil {
				return nil, usagef("--tls-ca-cert: %v", err)
			}
			key, err := os.ReadFile(t.caKey)
			if err != nil {
				return nil, usagef("--tls-ca-key: %v", err)
			}
			c.CaCertPem, c.CaKeyPem = string(cert), string(key)
		}
		tf.Action = &pb.TlsFault_Certificate{Certificate: c}
	} else if t.caCert != "" || t.caKey != "" {
		return nil, usagef("--tls-ca-cert and --tls-ca-key go with --tls-certificate")
	}
	switch {
	case actions > 1:
		return nil, usagef("give one of --tls-handshake-delay, --tls-reset, --tls-alert, --tls-certificate")
	case actions == 0 && len(t.serverNames) == 0:
		if t.rate != 1 {
			return nil, usagef("--tls-rate goes with a --tls-* action")
		}
		return nil, nil
	}
	return tf, nil
}
