package nodecontroller

import (
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/faultline-dev/faultline/pkg/fault"
)

// Journal records the Faults this node has begun to apply, where a
// restarted faultlined finds them. The Fault's status says the same, but
// it is written after the targets are faulted: a daemon killed in
// between would otherwise start the Fault again after its restart.
type Journal interface {
	// Begin records uid before any of its targets is touched.
	Begin(uid types.UID) error
	// End forgets uid: its run here is over, and said so in the status.
	End(uid types.UID)
	// Begun reports whether uid was begun and not ended, by this process
	// or the one before it. An entry whose run was cut short after its
	// status said Ended is harmless: only a Fault without a status entry
	// here is looked up.
	Begun(uid types.UID) bool
}

// DirJournal is a Journal of empty files in a directory, one per Fault.
// faultlined keeps it beside its socket: in the DaemonSet that is an
// emptyDir, which outlives the container's restarts (not the pod's).
type DirJournal struct{ Dir string }

// OpenJournal creates dir if need be and forgets entries older than the
// longest fault (those of Faults deleted while no daemon ran).
func OpenJournal(dir string) (*DirJournal, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > fault.MaxDuration+time.Hour {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	return &DirJournal{Dir: dir}, nil
}

// path: a plan step's UID is PLAN-UID/STEP, so the name is escaped.
func (j *DirJournal) path(uid types.UID) string {
	return filepath.Join(j.Dir, url.PathEscape(string(uid)))
}

func (j *DirJournal) Begin(uid types.UID) error {
	return os.WriteFile(j.path(uid), nil, 0o600)
}

// End ignores a failed removal: OpenJournal forgets the entry in time.
func (j *DirJournal) End(uid types.UID) { _ = os.Remove(j.path(uid)) }

func (j *DirJournal) Begun(uid types.UID) bool {
	_, err := os.Stat(j.path(uid))
	return err == nil
}

// MemJournal is a Journal in memory: a process's own runs only, or, shared
// by two Controllers in a test, a restart.
type MemJournal struct {
	mu    sync.Mutex
	begun map[types.UID]bool
}

func (j *MemJournal) Begin(uid types.UID) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.begun == nil {
		j.begun = map[types.UID]bool{}
	}
	j.begun[uid] = true
	return nil
}

func (j *MemJournal) End(uid types.UID) {
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.begun, uid)
}

func (j *MemJournal) Begun(uid types.UID) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.begun[uid]
}
