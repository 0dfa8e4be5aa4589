// Package topo builds small network topologies out of named network
// namespaces, bridges and veth pairs, for faultline's tests and demo.
// Every function undoes what it did when it fails half-way.
package topo

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/faultline-dev/faultline/pkg/netns"
)

// CreateNetns creates the named network namespace /run/netns/name (as `ip
// netns add` does) with its loopback up, and opens it.
func CreateNetns(name string) (*netns.Handle, error) {
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
			errc <- err // the thread stays locked and is discarded
			return
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		return nil, fmt.Errorf("create netns %s: %w", name, err)
	}
	h, err := netns.Open("/run/netns/" + name)
	if err == nil {
		err = SetUp(h, "lo")
	}
	if err != nil {
		DeleteNetns(name)
		return nil, err
	}
	return h, nil
}

// DeleteNetns removes a named namespace; a missing one is not an error.
func DeleteNetns(name string) error {
	err := vnetns.DeleteNamed(name)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

// Handle returns a netlink handle in ns (nil means this namespace).
func Handle(ns *netns.Handle) (*netlink.Handle, error) {
	if ns == nil {
		return netlink.NewHandle()
	}
	return netlink.NewHandleAt(vnetns.NsHandle(ns.FD()))
}

// SetUp brings an interface of ns up.
func SetUp(ns *netns.Handle, ifname string) error {
	h, err := Handle(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("find %s: %w", ifname, err)
	}
	return h.LinkSetUp(l)
}

// AddBridge creates bridge name in ns (nil: this namespace), up, with the
// addresses given.
func AddBridge(ns *netns.Handle, name string, addrs ...netip.Prefix) error {
	h, err := Handle(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := h.LinkAdd(br); err != nil {
		return fmt.Errorf("add bridge %s: %w", name, err)
	}
	for _, a := range addrs {
		if err := h.AddrAdd(br, &netlink.Addr{IPNet: ipNet(a), Flags: unix.IFA_F_NODAD}); err != nil {
			h.LinkDel(br)
			return fmt.Errorf("address %s on %s: %w", a, name, err)
		}
	}
	if err := h.LinkSetUp(br); err != nil {
		h.LinkDel(br)
		return err
	}
	return nil
}

// DeleteLink removes an interface of ns; a missing one is not an error.
func DeleteLink(ns *netns.Handle, name string) error {
	h, err := Handle(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		return nil
	}
	return h.LinkDel(l)
}

// Attach connects host to bridge (in brNS, nil: this namespace) with a
// veth pair: outer in brNS, enslaved to the bridge; eth0 in host, with the
// addresses given and up. It returns after removing the pair if anything
// fails.
func Attach(brNS *netns.Handle, bridge, outer string, host *netns.Handle, addrs ...netip.Prefix) (err error) {
	sw, err := Handle(brNS)
	if err != nil {
		return err
	}
	defer sw.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: outer}, PeerName: outer + "p"}
	if err := sw.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s: %w", outer, err)
	}
	defer func() {
		if err != nil {
			if l, lerr := sw.LinkByName(outer); lerr == nil {
				sw.LinkDel(l)
			}
		}
	}()
	br, err := sw.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("find bridge %s: %w", bridge, err)
	}
	outerLink, err := sw.LinkByName(outer)
	if err != nil {
		return err
	}
	if err := sw.LinkSetMaster(outerLink, br); err != nil {
		return fmt.Errorf("enslave %s: %w", outer, err)
	}
	if err := sw.LinkSetUp(outerLink); err != nil {
		return err
	}
	peer, err := sw.LinkByName(outer + "p")
	if err != nil {
		return err
	}
	if err := sw.LinkSetNsFd(peer, host.FD()); err != nil {
		return fmt.Errorf("move veth into %s: %w", host.Path(), err)
	}
	h, err := Handle(host)
	if err != nil {
		return err
	}
	defer h.Close()
	inner, err := h.LinkByName(outer + "p")
	if err != nil {
		return err
	}
	if err := h.LinkSetName(inner, "eth0"); err != nil {
		return err
	}
	for _, a := range addrs {
		if err := h.AddrAdd(inner, &netlink.Addr{IPNet: ipNet(a), Flags: unix.IFA_F_NODAD}); err != nil {
			return fmt.Errorf("address %s in %s: %w", a, host.Path(), err)
		}
	}
	return h.LinkSetUp(inner)
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
