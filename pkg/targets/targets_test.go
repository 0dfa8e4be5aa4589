package targets

import (
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestResolvePort(t *testing.T) {
	pod := Target{Name: "web-1", Ports: Ports{Named: map[string]int{"web": 8080, "grpc": 9000}}}
	behind := func(ports ...ServicePort) Target {
		t := pod
		t.Ports.Service = &ServicePorts{Name: "catalog", Ports: ports}
		return t
	}
	http := ServicePort{Name: "http", Port: 80, TargetPortName: "web"}
	admin := ServicePort{Name: "admin", Port: 81, TargetPort: 9090}
	plain := ServicePort{Name: "", Port: 7000}
	for _, tc := range []struct {
		name   string
		target Target
		port   int
		byName string
		def    int
		want   int
		err    string
	}{
		{"pod default", pod, 0, "", 80, 80, ""},
		{"pod number, undeclared", pod, 3000, "", 80, 3000, ""},
		{"pod named", pod, 0, "grpc", 80, 9000, ""},
		{"pod unknown name", pod, 0, "metrics", 80, 0, `pod "web-1" does not export port "metrics"`},
		{"pod own default", Target{Port: 8081}, 0, "", 80, 8081, ""},
		{"service only port", behind(http), 0, "", 80, 8080, ""},
		{"service several ports", behind(http, admin), 0, "", 80, 0, "no port selected and service exposes more than one service"},
		{"service port number", behind(http, admin), 81, "", 80, 9090, ""},
		{"service port name", behind(http, admin), 0, "http", 80, 8080, ""},
		{"service no such port", behind(http), 82, "", 80, 0, `service "catalog" does not expose port 82`},
		{"service no such name", behind(http), 0, "x", 80, 0, `service "catalog" has no port named "x"`},
		{"service targetPort unset", behind(plain), 0, "", 80, 7000, ""},
		{"out of range", pod, 70000, "", 80, 0, "port must be in 1-65535"},
	} {
		got, err := tc.target.ResolvePort(tc.port, tc.byName, tc.def)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, errdefs.ErrInvalidArgument)):
			t.Errorf("%s: got %d, %v; want InvalidArgument %q", tc.name, got, err, tc.err)
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("%s: got %d, %v; want %d", tc.name, got, err, tc.want)
		}
	}
}
