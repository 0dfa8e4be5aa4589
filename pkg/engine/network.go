package engine

import (
	"context"
	"sync"

	"github.com/faultline-dev/faultline/pkg/fault"
	"github.com/faultline-dev/faultline/pkg/netfault"
)

// networkFault is a network fault: tcx drop and sk_lookup refuse programs.
type networkFault struct {
	progs  *netfault.Programs
	closed sync.Once

	mu       sync.Mutex // counters runs on List calls and on the fault's own goroutine
	last     netfault.Stats
	detached bool
}

var protocols = map[fault.Protocol]uint8{
	fault.ProtocolAll: netfault.ProtocolAll, fault.ProtocolTCP: netfault.ProtocolTCP, fault.ProtocolUDP: netfault.ProtocolUDP,
}

func (f *Running) setupNetwork(ctx context.Context, n *fault.Network) (impl, error) {
	if err := f.checkpoint(ctx); err != nil {
		return nil, err
	}
	progs, err := netfault.Attach(f.ns, netfault.Options{Port: n.Port, Protocol: protocols[n.Protocol], DropRate: n.DropRate, ResetRate: n.ResetRate})
	if err != nil {
		return nil, err
	}
	return &networkFault{progs: progs}, nil
}

// counters reads the programs' counters, or the last reading once they are
// closed.
func (nf *networkFault) counters() Counters {
	nf.mu.Lock()
	defer nf.mu.Unlock()
	if st, err := nf.progs.Stats(); err == nil {
		nf.last = st
	}
	return Counters{PacketsSeen: nf.last.PacketsSeen, PacketsDropped: nf.last.PacketsDropped, ConnectionsRefused: nf.last.ConnectionsRefused}
}

func (nf *networkFault) links() int {
	nf.mu.Lock()
	defer nf.mu.Unlock()
	if nf.detached {
		return 0
	}
	return nf.progs.Links()
}

// detach is the whole release of a network fault: nothing drains.
func (nf *networkFault) detach() {
	nf.closed.Do(func() {
		nf.counters() // keep the last reading
		nf.progs.Close()
		nf.mu.Lock()
		nf.detached = true
		nf.mu.Unlock()
	})
}

func (nf *networkFault) release() { nf.detach() }
