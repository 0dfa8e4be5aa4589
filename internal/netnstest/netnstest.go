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
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

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
	h := handleAt(tb, n.sw)
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := h.LinkAdd(br); err != nil {
		tb.Fatalf("add bridge: %v", err)
	}
	if err := h.LinkSetUp(br); err != nil {
		tb.Fatalf("bridge up: %v", err)
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

	sw := handleAt(tb, n.sw)
	outer := fmt.Sprintf("vh%d", idx)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: outer}, PeerName: "eth0"}
	if err := sw.LinkAdd(veth); err != nil {
		tb.Fatalf("add veth: %v", err)
	}
	tb.Cleanup(func() {
		if l, err := sw.LinkByName(outer); err == nil {
			_ = sw.LinkDel(l)
		}
	})
	br, err := sw.LinkByName("br0")
	if err != nil {
		tb.Fatalf("find bridge: %v", err)
	}
	outerLink, err := sw.LinkByName(outer)
	if err != nil {
		tb.Fatalf("find veth: %v", err)
	}
	if err := sw.LinkSetMaster(outerLink, br); err != nil {
		tb.Fatalf("enslave veth: %v", err)
	}
	if err := sw.LinkSetUp(outerLink); err != nil {
		tb.Fatalf("veth up: %v", err)
	}
	peer, err := sw.LinkByName("eth0")
	if err != nil {
		tb.Fatalf("find veth peer: %v", err)
	}
	if err := sw.LinkSetNsFd(peer, host.NS.FD()); err != nil {
		tb.Fatalf("move veth into %s: %v", name, err)
	}

	h := handleAt(tb, host.NS)
	for _, ifname := range []string{"lo", "eth0"} {
		l, err := h.LinkByName(ifname)
		if err != nil {
			tb.Fatalf("find %s in %s: %v", ifname, name, err)
		}
		if ifname == "eth0" {
			for _, a := range []netip.Prefix{netip.PrefixFrom(host.Addr, 24), netip.PrefixFrom(host.Addr6, 64)} {
				addr := &netlink.Addr{IPNet: prefixToIPNet(a), Flags: unix.IFA_F_NODAD}
				if err := h.AddrAdd(l, addr); err != nil {
					tb.Fatalf("add %s in %s: %v", a, name, err)
				}
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			tb.Fatalf("%s up in %s: %v", ifname, name, err)
		}
	}
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
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		ns, err := vnetns.NewNamed(name)
		if err != nil {
			_ = vnetns.Set(orig)
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ns.Close()
		if err := vnetns.Set(orig); err != nil {
			errc <- err // thread stays locked and is discarded
			return
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		tb.Fatalf("create netns %s: %v", name, err)
	}
	tb.Cleanup(func() {
		if err := vnetns.DeleteNamed(name); err != nil {
			tb.Errorf("delete netns %s: %v", name, err)
		}
	})
	h, err := netns.Open("/run/netns/" + name)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Close() })
	return h
}

func handleAt(tb testing.TB, ns *netns.Handle) *netlink.Handle {
	tb.Helper()
	h, err := netlink.NewHandleAt(vnetns.NsHandle(ns.FD()))
	if err != nil {
		tb.Fatalf("netlink handle in %s: %v", ns.Path(), err)
	}
	tb.Cleanup(h.Close)
	return h
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func randomID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
