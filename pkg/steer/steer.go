// Package steer hands a network namespace's new inbound TCP connections for
// one port to a proxy listener, with an sk_lookup eBPF program (kernel >= 5.9).
//
// Each Steering loads its own copy of bpf/steer.c and attaches it to the
// namespace with an fd-owned bpf_link, never pinned: when the process exits,
// however it exits, the kernel detaches the program. The data path fails
// open: the SOCKMAP slot empties when the proxy listener closes, and the
// lookup then goes on to the application's own socket.
//
// The proxy's own upstream connections must not be steered back into it:
// they are dialled from BypassSource, which the program skips. Every other
// connection is steered, loopback included, so a port-forward into the pod
// or a sidecar calling the application gets the fault too.
package steer

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/faultline-dev/faultline/pkg/netns"
)

// Options says what to steer where.
type Options struct {
	// Port is the target port (1-65535).
	Port uint16
	// IPv4 and IPv6 are the proxy listeners, created inside the namespace.
	// Either may be nil; connections of that family then go to the app.
	IPv4, IPv6 *net.TCPListener
	// BypassSource is the IPv4 address the proxy dials the application
	// from; connections from it are never steered. Invalid means none.
	BypassSource netip.Addr
}

// Stats counts what the program did with connections to the port.
type Stats struct {
	Steered     uint64 // handed to the proxy
	Bypassed    uint64 // the proxy's own upstream connections
	NoListener  uint64 // failed open: no listener in the slot
	AssignError uint64 // failed open: the kernel refused the listener
}

// Steering is an attached steering program. Close detaches it.
type Steering struct {
	objs steerObjects
	lnk  link.Link

	closeOnce sync.Once
	closeErr  error
}

// Attach loads the program and attaches it to ns.
func Attach(ns *netns.Handle, opts Options) (*Steering, error) {
	if opts.Port == 0 {
		return nil, errors.New("steer: port must not be 0")
	}
	s := &Steering{}
	if err := loadSteerObjects(&s.objs, nil); err != nil {
		return nil, fmt.Errorf("load sk_lookup program: %w", err)
	}
	if err := s.configure(opts); err != nil {
		s.objs.Close()
		return nil, err
	}
	lnk, err := link.AttachNetNs(ns.FD(), s.objs.FlSteer)
	if err != nil {
		s.objs.Close()
		return nil, fmt.Errorf("attach sk_lookup to netns %s: %w", ns.Path(), err)
	}
	s.lnk = lnk
	return s, nil
}

func (s *Steering) configure(opts Options) error {
	cfg := steerSteerConfig{Port: uint32(opts.Port)}
	if opts.BypassSource.Is4() {
		b := opts.BypassSource.As4()
		// The program compares against ctx->remote_ip4, in network order;
		// the map stores the value in host (little-endian) layout.
		cfg.SkipIp4 = uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
	}
	if err := s.objs.SteerCfg.Put(uint32(0), cfg); err != nil {
		return fmt.Errorf("write steering config: %w", err)
	}
	for slot, ln := range []*net.TCPListener{opts.IPv4, opts.IPv6} {
		if ln == nil {
			continue
		}
		if err := putListener(s.objs.ProxySocks, uint32(slot), ln); err != nil {
			return err
		}
	}
	return nil
}

func putListener(m *ebpf.Map, slot uint32, ln *net.TCPListener) error {
	rc, err := ln.SyscallConn()
	if err != nil {
		return fmt.Errorf("listener fd: %w", err)
	}
	var perr error
	if err := rc.Control(func(fd uintptr) {
		perr = m.Put(slot, uint64(fd))
	}); err != nil {
		return fmt.Errorf("listener fd: %w", err)
	}
	if perr != nil {
		return fmt.Errorf("put listener %s into sockmap (an MPTCP listener cannot go there): %w", ln.Addr(), perr)
	}
	return nil
}

// Stats reads the program's counters.
func (s *Steering) Stats() (Stats, error) {
	var st Stats
	for i, dst := range []*uint64{&st.Steered, &st.Bypassed, &st.NoListener, &st.AssignError} {
		var perCPU []uint64
		if err := s.objs.SteerStats.Lookup(uint32(i), &perCPU); err != nil {
			return st, fmt.Errorf("read steering stats: %w", err)
		}
		for _, v := range perCPU {
			*dst += v
		}
	}
	return st, nil
}

// Close detaches the program and frees its maps. It is safe to call more
// than once.
func (s *Steering) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if s.lnk != nil {
			errs = append(errs, s.lnk.Close())
		}
		errs = append(errs, s.objs.Close())
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// programName is the steering program's name in the kernel.
const programName = "fl_steer"

// Steered reports whether a steering program that some process attached to
// ns, this one or another faultlined, steers port: two daemons must not
// both take one port, as a daemon's own faults do not. It returns the
// program's ID.
func Steered(ns *netns.Handle, port uint16) (ebpf.ProgramID, bool, error) {
	res, err := link.QueryPrograms(link.QueryOptions{Target: ns.FD(), Attach: ebpf.AttachSkLookup})
	if err != nil {
		return 0, false, fmt.Errorf("query sk_lookup programs of %s: %w", ns.Path(), err)
	}
	for _, ap := range res.Programs {
		p, err := steeredPort(ap.ID)
		if err != nil {
			continue // gone meanwhile, or not ours
		}
		if p == port {
			return ap.ID, true, nil
		}
	}
	return 0, false, nil
}

// steeredPort reads the port of a steering program, by its ID.
func steeredPort(id ebpf.ProgramID) (uint16, error) {
	prog, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return 0, err
	}
	defer prog.Close()
	info, err := prog.Info()
	if err != nil {
		return 0, err
	}
	if info.Name != programName {
		return 0, errors.New("not a steering program")
	}
	ids, _ := info.MapIDs()
	for _, mid := range ids {
		m, err := ebpf.NewMapFromID(mid)
		if err != nil {
			continue
		}
		mi, err := m.Info()
		if err == nil && mi.Name == "steer_cfg" {
			var cfg steerSteerConfig
			err = m.Lookup(uint32(0), &cfg)
			m.Close()
			return uint16(cfg.Port), err
		}
		m.Close()
	}
	return 0, errors.New("no steering config")
}
