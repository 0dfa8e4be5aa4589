// Package netns runs work inside Linux network namespaces.
//
// A Handle holds an open file of a network namespace (a bind mount such as
// /run/netns/NAME or /proc/PID/ns/net). Sockets belong to the namespace they
// were created in, so a listener or a connection made through Do, Listen or
// Dial can afterwards be used from any goroutine, as istio's ztunnel does for
// pod listeners.
//
// Do switches one OS thread into the namespace, runs the function there and
// switches back. The function must not call runtime.LockOSThread or
// UnlockOSThread, and must not start goroutines that expect to inherit the
// namespace: only the calling thread is inside it. If switching back fails,
// the thread stays locked and the Go runtime discards it when the goroutine
// exits, so no thread is ever reused in the wrong namespace.
package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// ErrNotNetns is wrapped by Open when the path is not a network namespace.
var ErrNotNetns = errors.New("not a network namespace")

// ID identifies a network namespace independently of the path used to open
// it: two handles with the same ID are the same namespace.
type ID struct {
	Dev uint64
	Ino uint64
}

func (id ID) String() string { return fmt.Sprintf("net:[%d]", id.Ino) }

// Handle is an open network namespace. The zero value is not usable.
type Handle struct {
	file *os.File
	orig *os.File // the namespace threads return to after Do
	path string
	id   ID
}

// Open opens the network namespace at path. It fails with an error wrapping
// os.ErrNotExist if the path does not exist and ErrNotNetns if it is not a
// network namespace.
func Open(path string) (*Handle, error) {
	// O_NONBLOCK: a FIFO (or a device) at path must not block the open;
	// newHandle then refuses it as not a namespace.
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	h, err := newHandle(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	return h, nil
}

// OpenPID opens the network namespace of process pid.
func OpenPID(pid int) (*Handle, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("open netns of pid %d: %w", pid, os.ErrNotExist)
	}
	return Open("/proc/" + strconv.Itoa(pid) + "/ns/net")
}

func newHandle(f *os.File, path string) (*Handle, error) {
	typ, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	if err != nil || typ != unix.CLONE_NEWNET {
		return nil, fmt.Errorf("open netns %s: %w", path, ErrNotNetns)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("stat netns %s: %w", path, err)
	}
	orig, err := os.OpenFile("/proc/thread-self/ns/net", os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open own netns: %w", err)
	}
	return &Handle{file: f, orig: orig, path: path, id: ID{Dev: st.Dev, Ino: st.Ino}}, nil
}

// Same reports whether path is still this namespace: false once a named
// namespace is deleted or a process has exited (or its PID is reused).
func (h *Handle) Same(path string) bool {
	var st unix.Stat_t
	return unix.Stat(path, &st) == nil && st.Dev == h.id.Dev && st.Ino == h.id.Ino
}

// FD returns the namespace's file descriptor, valid until Close.
func (h *Handle) FD() int { return int(h.file.Fd()) }

// Path returns the path the handle was opened from.
func (h *Handle) Path() string { return h.path }

// ID returns the namespace's identity.
func (h *Handle) ID() ID { return h.id }

// Close releases the namespace. It is safe to call more than once. Sockets
// created inside the namespace keep it alive until they are closed too.
func (h *Handle) Close() error {
	return errors.Join(h.file.Close(), h.orig.Close())
}

// Do runs fn on a fresh OS thread switched into the namespace.
func (h *Handle) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(h.FD(), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", h.path, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(h.orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Stay locked: the runtime kills this thread when we return.
			errc <- errors.Join(ferr, fmt.Errorf("leave netns %s: %w", h.path, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Listen opens a TCP listener inside the namespace. MPTCP is disabled: Go
// listeners default to MPTCP on kernels that have it, and an MPTCP listener
// cannot be put into a SOCKMAP.
func (h *Handle) Listen(ctx context.Context, network, address string) (*net.TCPListener, error) {
	var ln net.Listener
	err := h.Do(func() error {
		var lc net.ListenConfig
		lc.SetMultipathTCP(false)
		var err error
		ln, err = lc.Listen(ctx, network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s %s in netns %s: %w", network, address, h.path, err)
	}
	return ln.(*net.TCPListener), nil
}

// Dialer returns a dial function whose sockets are created inside the
// namespace, bound to local when it is not nil.
func (h *Handle) Dialer(local net.Addr) func(ctx context.Context, network, address string) (net.Conn, error) {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		d := net.Dialer{LocalAddr: local}
		d.SetMultipathTCP(false)
		var c net.Conn
		err := h.Do(func() error {
			var err error
			c, err = d.DialContext(ctx, network, address)
			return err
		})
		return c, err
	}
}
