package steer_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/faultline-dev/faultline/internal/testkit/netnstest"
	"github.com/faultline-dev/faultline/pkg/steer"
)

// serveName answers every connection with name and closes it.
func serveName(ln net.Listener, name string) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(name))
			c.Close()
		}
	}()
}

func whoAnswers(t *testing.T, dial func(context.Context, string, string) (net.Conn, error), addr string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := dial(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read from %s: %v", addr, err)
	}
	return string(b)
}

func TestSteerInboundAndLoopback(t *testing.T) {
	n := netnstest.NewNet(t)
	pod := n.AddHost("pod")
	client := n.AddHost("client")

	serveName(pod.Listen(t, "tcp", ":8080"), "app")
	serveName(pod.Listen(t, "tcp", ":8081"), "other")
	p4 := pod.Listen(t, "tcp4", "127.0.0.1:0").(*net.TCPListener)
	p6 := pod.Listen(t, "tcp6", "[::1]:0").(*net.TCPListener)
	serveName(p4, "proxy")
	serveName(p6, "proxy")

	bypass := netip.MustParseAddr("127.0.0.253")
	s, err := steer.Attach(pod.NS, steer.Options{Port: 8080, IPv4: p4, IPv6: p6, BypassSource: bypass})
	if err != nil {
		t.Fatalf("%+v", err)
	}
	defer s.Close()

	v4 := netip.AddrPortFrom(pod.Addr, 8080).String()
	v6 := netip.AddrPortFrom(pod.Addr6, 8080).String()
	for _, tc := range []struct {
		name string
		dial func(context.Context, string, string) (net.Conn, error)
		addr string
		want string
	}{
		{"client ipv4", client.Dial(), v4, "proxy"},
		{"client ipv6", client.Dial(), v6, "proxy"},
		{"pod loopback", pod.Dial(), "127.0.0.1:8080", "proxy"},
		{"pod ipv6 loopback", pod.Dial(), "[::1]:8080", "proxy"},
		{"proxy upstream source", pod.NS.Dialer(&net.TCPAddr{IP: bypass.AsSlice()}), "127.0.0.1:8080", "app"},
		{"other port", client.Dial(), netip.AddrPortFrom(pod.Addr, 8081).String(), "other"},
	} {
		if got := whoAnswers(t, tc.dial, tc.addr); got != tc.want {
			t.Errorf("%s: answered by %q, want %q", tc.name, got, tc.want)
		}
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Steered != 4 || st.Bypassed != 1 {
		t.Errorf("stats %+v, want 4 steered and 1 bypassed", st)
	}

	// Fail open: with the proxy listener closed, the app answers.
	p4.Close()
	if got := whoAnswers(t, client.Dial(), v4); got != "app" {
		t.Errorf("after the listener closed: answered by %q, want app", got)
	}
	// Detached: the app answers IPv6 too.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := whoAnswers(t, client.Dial(), v6); got != "app" {
		t.Errorf("after Close: answered by %q, want app", got)
	}
}
