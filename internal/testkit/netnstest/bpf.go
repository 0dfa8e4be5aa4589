package netnstest

import (
	"errors"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/faultline-dev/faultline/pkg/netns"
)

// AttachedPrograms returns the programs attached by bpf links to the
// namespace (sk_lookup), found by walking every link in the kernel.
func AttachedPrograms(tb testing.TB, ns *netns.Handle) []ebpf.ProgramID {
	tb.Helper()
	var ids []ebpf.ProgramID
	it := new(link.Iterator)
	defer it.Close()
	for it.Next() {
		info, err := it.Link.Info()
		if err != nil {
			continue
		}
		if n := info.NetNs(); n != nil && uint64(n.NetnsInode) == ns.ID().Ino {
			ids = append(ids, info.Program)
		}
	}
	if err := it.Err(); err != nil {
		tb.Fatalf("iterate bpf links: %v", err)
	}
	return ids
}

// LivePrograms returns those of ids that still exist in the kernel.
func LivePrograms(tb testing.TB, ids []ebpf.ProgramID) []ebpf.ProgramID {
	tb.Helper()
	var live []ebpf.ProgramID
	for _, id := range ids {
		p, err := ebpf.NewProgramFromID(id)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			tb.Fatalf("look up program %d: %v", id, err)
		}
		p.Close()
		live = append(live, id)
	}
	return live
}

// ProgramNames are the names of faultline's eBPF programs (bpf/*.c).
var ProgramNames = []string{"fl_steer", "fl_drop", "fl_refuse"}

// ProgramsNamed returns the IDs of loaded programs whose name is one of
// names. Compare a snapshot taken before an action with one after it to
// find the programs the action loaded.
func ProgramsNamed(tb testing.TB, names ...string) map[ebpf.ProgramID]bool {
	tb.Helper()
	out := map[ebpf.ProgramID]bool{}
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return out
		}
		if err != nil {
			tb.Fatalf("iterate programs: %v", err)
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // gone meanwhile
		}
		info, err := p.Info()
		p.Close()
		if err != nil {
			continue
		}
		for _, n := range names {
			if info.Name == n {
				out[id] = true
			}
		}
	}
}
