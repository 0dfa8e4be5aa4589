package cli

import (
	"os/exec"
	"runtime"
	"syscall"
)

// dieWithParent makes the kernel kill cmd with SIGKILL when this process
// dies. The signal follows the thread that forks, so the calling
// goroutine keeps its thread until the returned function runs, after
// cmd has ended.
func dieWithParent(cmd *exec.Cmd) (done func()) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	runtime.LockOSThread()
	return runtime.UnlockOSThread
}
