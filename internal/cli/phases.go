package cli

import (
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// phaseFlag is one --phase DURATION[,key=value...], read into its parts;
// the keys are the fault's own flags' names.
type phaseFlag struct {
	duration, delay, variation *durationpb.Duration
	delayRate                  *float64
	errorRate                  float64
	code                       uint32
	text                       string            // errorBody / statusMessage
	headers                    map[string]string // http: error headers
}

// parsePhase reads one --phase; codeKey and textKey are "error-code" and
// "error-body" for HTTP, "status-code" and "status-message" for gRPC.
func parsePhase(s, codeKey, textKey string, headers bool) (phaseFlag, error) {
	var ph phaseFlag
	bad := func(format string, args ...any) (phaseFlag, error) {
		return phaseFlag{}, usagef("--phase %q: "+format, append([]any{s}, args...)...)
	}
	parts := strings.Split(s, ",")
	d, err := time.ParseDuration(strings.TrimSpace(parts[0]))
	if err != nil {
		return bad("must start with its duration, e.g. 10s,error-rate=1,%s=429", codeKey)
	}
	ph.duration = durationpb.New(d)
	for _, part := range parts[1:] {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return bad("%q is not key=value", part)
		}
		var err error
		switch k {
		case "delay", "delay-variation":
			var x time.Duration
			if x, err = time.ParseDuration(v); err == nil {
				if k == "delay" {
					ph.delay = durationpb.New(x)
				} else {
					ph.variation = durationpb.New(x)
				}
			}
		case "delay-rate", "error-rate":
			var x float64
			if x, err = strconv.ParseFloat(v, 64); err == nil {
				if k == "delay-rate" {
					ph.delayRate = &x
				} else {
					ph.errorRate = x
				}
			}
		case codeKey:
			var x uint64
			if x, err = strconv.ParseUint(v, 10, 32); err == nil {
				ph.code = uint32(x)
			}
		case textKey:
			ph.text = v
		case "error-header":
			if !headers {
				return bad("unknown key %q", k)
			}
			name, value, ok := strings.Cut(v, ":")
			if !ok {
				return bad("error-header=%q must look like Name:value", v)
			}
			if ph.headers == nil {
				ph.headers = map[string]string{}
			}
			ph.headers[strings.TrimSpace(name)] = strings.TrimSpace(value)
		default:
			keys := "delay, delay-variation, delay-rate, error-rate, " + codeKey + ", " + textKey
			if headers {
				keys += ", error-header"
			}
			return bad("unknown key %q (keys: %s)", k, keys)
		}
		if err != nil {
			return bad("%s: %v", k, err)
		}
	}
	return ph, nil
}

func httpPhases(flags []string) ([]*pb.HTTPPhase, error) {
	var out []*pb.HTTPPhase
	for _, s := range flags {
		ph, err := parsePhase(s, "error-code", "error-body", true)
		if err != nil {
			return nil, err
		}
		out = append(out, &pb.HTTPPhase{Duration: ph.duration, AverageDelay: ph.delay, DelayVariation: ph.variation, DelayRate: ph.delayRate,
			ErrorRate: ph.errorRate, ErrorCode: ph.code, ErrorBody: ph.text, ErrorHeaders: ph.headers})
	}
	return out, nil
}

func grpcPhases(flags []string) ([]*pb.GrpcPhase, error) {
	var out []*pb.GrpcPhase
	for _, s := range flags {
		ph, err := parsePhase(s, "status-code", "status-message", false)
		if err != nil {
			return nil, err
		}
		out = append(out, &pb.GrpcPhase{Duration: ph.duration, AverageDelay: ph.delay, DelayVariation: ph.variation, DelayRate: ph.delayRate,
			ErrorRate: ph.errorRate, StatusCode: ph.code, StatusMessage: ph.text})
	}
	return out, nil
}
