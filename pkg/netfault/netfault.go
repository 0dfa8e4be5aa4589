// Package netfault drops packets and refuses connections in a network
// namespace with eBPF: a tcx ingress program (kernel >= 6.6) on each of
// the namespace's interfaces drops a fraction of the inbound packets to a
// port and protocol, and an sk_lookup program refuses a fraction of the new
// TCP connections to the port with a RST.
//
// The tcx programs attach on the pod side of the interfaces, inside the
// namespace: that works for any target, a netns path or a PID, without
// finding the host side of a veth (which a macvlan or ipvlan pod does not
// have), at the cost of one setns per interface at attach time. Every link
// is fd-owned and never pinned, so the kernel detaches them all when the
// process exits.
package netfault

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/faultline-dev/faultline/pkg/netns"
)

// Protocols a fault can be limited to.
const (
	ProtocolAll uint8 = 0
	ProtocolTCP uint8 = unix.IPPROTO_TCP
	ProtocolUDP uint8 = unix.IPPROTO_UDP
)

// Options describe a network fault.
type Options struct {
	Port     uint16 // 0 = all ports
	Protocol uint8  // ProtocolAll, ProtocolTCP or ProtocolUDP
	// DropRate is the fraction of matching inbound packets dropped, 0-1.
	DropRate float64
	// ResetRate is the fraction of new TCP connections refused, 0-1.
	ResetRate float64
}

// Stats are a fault's counters.
type Stats struct {
	PacketsSeen        uint64 // inbound packets matching port and protocol
	PacketsDropped     uint64
	ConnectionsSeen    uint64 // listener lookups of new TCP connections to the port (a retransmitted SYN counts again)
	ConnectionsRefused uint64
}

// Programs are an attached network fault's programs.
type Programs struct {
	drop   dropObjects
	refuse *refuseObjects
	links  []link.Link

	closeOnce sync.Once
	closeErr  error
}

func ppm(rate float64) uint32 { return uint32(math.Round(rate * 1e6)) }

// Attach loads the programs and attaches them to ns.
func Attach(ns *netns.Handle, opts Options) (_ *Programs, err error) {
	f := &Programs{}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	if err := loadDropObjects(&f.drop, nil); err != nil {
		return nil, fmt.Errorf("load tcx drop program: %w", err)
	}
	cfg := dropDropConfig{DropPpm: ppm(opts.DropRate), Port: opts.Port, Protocol: opts.Protocol}
	if err := f.drop.DropCfg.Put(uint32(0), cfg); err != nil {
		return nil, fmt.Errorf("write drop config: %w", err)
	}
	ifaces, err := interfaces(ns)
	if err != nil {
		return nil, err
	}
	for _, ifindex := range ifaces {
		var l link.Link
		// BPF_LINK_CREATE resolves the ifindex in the caller's namespace.
		err := ns.Do(func() error {
			var err error
			l, err = link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: f.drop.FlDrop, Attach: ebpf.AttachTCXIngress})
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("attach tcx ingress to ifindex %d in %s: %w", ifindex, ns.Path(), err)
		}
		f.links = append(f.links, l)
	}

	if opts.Protocol != ProtocolUDP {
		f.refuse = &refuseObjects{}
		if err := loadRefuseObjects(f.refuse, nil); err != nil {
			f.refuse = nil
			return nil, fmt.Errorf("load sk_lookup refuse program: %w", err)
		}
		rcfg := refuseRefuseConfig{RefusePpm: ppm(opts.ResetRate), Port: uint32(opts.Port)}
		if err := f.refuse.RefuseCfg.Put(uint32(0), rcfg); err != nil {
			return nil, fmt.Errorf("write refuse config: %w", err)
		}
		l, err := link.AttachNetNs(ns.FD(), f.refuse.FlRefuse)
		if err != nil {
			return nil, fmt.Errorf("attach sk_lookup to %s: %w", ns.Path(), err)
		}
		f.links = append(f.links, l)
	}
	return f, nil
}

// interfaces lists the namespace's interfaces other than loopback: traffic
// inside the pod is never dropped.
func interfaces(ns *netns.Handle) ([]int, error) {
	h, err := netlink.NewHandleAt(vnetns.NsHandle(ns.FD()))
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", ns.Path(), err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces of %s: %w", ns.Path(), err)
	}
	var out []int
	for _, l := range links {
		if l.Attrs().Flags&unix.IFF_LOOPBACK == 0 {
			out = append(out, l.Attrs().Index)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s has no interface but loopback", ns.Path())
	}
	return out, nil
}

// Stats reads the counters.
func (f *Programs) Stats() (Stats, error) {
	var st Stats
	if err := sumPerCPU(f.drop.DropStats, &st.PacketsSeen, &st.PacketsDropped); err != nil {
		return st, err
	}
	if f.refuse != nil {
		if err := sumPerCPU(f.refuse.RefuseStats, &st.ConnectionsSeen, &st.ConnectionsRefused); err != nil {
			return st, err
		}
	}
	return st, nil
}

func sumPerCPU(m *ebpf.Map, dst ...*uint64) error {
	for i, d := range dst {
		var perCPU []uint64
		if err := m.Lookup(uint32(i), &perCPU); err != nil {
			return fmt.Errorf("read counters: %w", err)
		}
		for _, v := range perCPU {
			*d += v
		}
	}
	return nil
}

// ProgramIDs returns the kernel IDs of the loaded programs, for leak checks.
func (f *Programs) ProgramIDs() []ebpf.ProgramID {
	var ids []ebpf.ProgramID
	for _, p := range []*ebpf.Program{f.drop.FlDrop, f.refuseProg()} {
		if p == nil {
			continue
		}
		if info, err := p.Info(); err == nil {
			if id, ok := info.ID(); ok {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

func (f *Programs) refuseProg() *ebpf.Program {
	if f.refuse == nil {
		return nil
	}
	return f.refuse.FlRefuse
}

// Links is how many kernel links the programs were attached with: one
// per interface, and one on the namespace unless UDP only.
func (f *Programs) Links() int { return len(f.links) }

// Close detaches and frees everything. It is safe to call more than once.
func (f *Programs) Close() error {
	f.closeOnce.Do(func() {
		var errs []error
		for _, l := range f.links {
			errs = append(errs, l.Close())
		}
		errs = append(errs, f.drop.Close())
		if f.refuse != nil {
			errs = append(errs, f.refuse.Close())
		}
		f.closeErr = errors.Join(errs...)
	})
	return f.closeErr
}
