// Package netnstest builds throwaway network topologies for privileged
// tests: a "switch" namespace holding a bridge, and hosts (test "pods" and
// clients), each a named network namespace with a veth into the bridge and
// an address in 198.18.0.0/15 (and 2001:2::/48 for IPv6).
//
// Every namespace is named with the fl-test- prefix, so `make test-clean`
// can sweep up after a test binary that was killed, and every resource is
// removed by t.Cleanup, in reverse order, whether the test passed or not.
package netnstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/faultline-dev/faultline/internal/testkit/topo"
	"github.com/faultline-dev/faultline/pkg/netns"
)

// Prefix starts the name of every namespace these helpers create.
const Prefix = "fl-test-"

// RequireRoot skips the test when not running as root outside CI, and fails
// it when CI is set: in CI a privileged test must run, never skip.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		tb.Fatal("this test needs root, and CI is set: run the suite as root")
	}
	tb.Skip("needs root (set CI=1 to make this a failure)")
}

// Net is a private L2 segment: a bridge in its own namespace.
type Net struct {
	tb     testing.TB
	id     string
	sw     *netns.Handle
	swName string
	hosts  int
	subnet byte // third octet of 198.18.<subnet>.0/24
}

// NewNet creates the switch namespace and its bridge. Hosts get addresses
// 198.18.<subnet>.<n>/24; the subnet only matters to readers of logs, since
// each Net is isolated.
func NewNet(tb testing.TB) *Net {
	tb.Helper()
	RequireRoot(tb)
	n := &Net{tb: tb, id: randomID(), subnet: 0}
	n.swName = Prefix + n.id + "-sw"
	n.sw = newNamedNetns(tb, n.swName)
	if err := topo.AddBridge(n.sw, "br0"); err != nil {
		tb.Fatal(err)
	}
	return n
}

// Host is a network namespace attached to a Net.
type Host struct {
	Name  string // namespace name, also under /run/netns
	Path  string
	NS    *netns.Handle
	Addr  netip.Addr // IPv4, in 198.18.0.0/15
	Addr6 netip.Addr // IPv6, in 2001:2::/48
}

// AddHost creates a host with the next free address.
func (n *Net) AddHost(label string) *Host {
	tb := n.tb
	tb.Helper()
	n.hosts++
	idx := n.hosts
	name := fmt.Sprintf("%s%s-%s", Prefix, n.id, label)
	host := &Host{
		Name:  name,
		Path:  "/run/netns/" + name,
		Addr:  netip.AddrFrom4([4]byte{198, 18, n.subnet, byte(idx + 1)}),
		Addr6: netip.MustParseAddr(fmt.Sprintf("2001:2::%x", idx+1)),
	}
	host.NS = newNamedNetns(tb, name)
	outer := fmt.Sprintf("vh%d", idx)
	if err := topo.Attach(n.sw, "br0", outer, host.NS, netip.PrefixFrom(host.Addr, 24), netip.PrefixFrom(host.Addr6, 64)); err != nil {
		tb.Fatalf("attach %s: %v", name, err)
	}
	tb.Cleanup(func() { topo.DeleteLink(n.sw, outer) })
	return host
}

// Listen opens a TCP listener inside the host.
func (h *Host) Listen(tb testing.TB, network, address string) net.Listener {
	tb.Helper()
	ln, err := h.NS.Listen(context.Background(), network, address)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	return ln
}

// Dial returns a dial function whose sockets live in the host.
func (h *Host) Dial() func(ctx context.Context, network, address string) (net.Conn, error) {
	return h.NS.Dialer(nil)
}

func newNamedNetns(tb testing.TB, name string) *netns.Handle {
	tb.Helper()
	h, err := topo.CreateNetns(name)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		h.Close()
		if err := topo.DeleteNetns(name); err != nil {
			tb.Errorf("delete netns %s: %v", name, err)
		}
	})
	return h
}

func randomID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
