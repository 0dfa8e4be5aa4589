//go:build !linux

package cli

import "os/exec"

// dieWithParent is a Linux feature (PR_SET_PDEATHSIG); elsewhere the
// command outlives a killed faultline run.
func dieWithParent(*exec.Cmd) (done func()) { return func() {} }
