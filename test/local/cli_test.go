package local

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func (l *lab) faultline(args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(env.bin, "faultline"), args...)
	cmd.Env = append(cmd.Environ(), "FAULTLINE_CONTAINERD="+env.daemon.Socket, "FAULTLINE_SOCKET="+l.node.Socket, "FAULTLINE_ADDR=")
	return cmd
}

func TestRunPassesAddressAndExitStatus(t *testing.T) {
	l := newLab(t)
	l.run(t, "one", map[string]string{"app": "one"})
	// The child lists targets through the gateway that run started.
	script := `echo "addr=$FAULTLINE_ADDR"; ` + filepath.Join(env.bin, "faultline") + ` targets -n ` + ctrNamespace + ` -l app=one; exit 7`
	cmd := l.faultline("run", "--local", "--containerd-namespace", ctrNamespace, "--", "sh", "-c", script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 7 {
		t.Fatalf("exit %v, want 7; output:\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "addr=127.0.0.1:") || !strings.Contains(out.String(), "one") || !strings.Contains(out.String(), ctrNamespace) {
		t.Errorf("output:\n%s", out.String())
	}
}

func TestRunForwardsSignalsAndCleansUp(t *testing.T) {
	l := newLab(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			script := `trap 'echo "got signal"; exit 3' INT TERM; echo "ready $FAULTLINE_ADDR"; while :; do sleep 0.05; done`
			cmd := l.faultline("run", "--local", "--", "sh", "-c", script)
			stdout, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			br := bufio.NewReader(stdout)
			line, err := br.ReadString('\n')
			if err != nil || !strings.HasPrefix(line, "ready 127.0.0.1:") {
				t.Fatalf("first line %q, %v", line, err)
			}
			addr := strings.TrimSpace(strings.TrimPrefix(line, "ready "))
			if c, err := net.Dial("tcp", addr); err != nil {
				t.Fatalf("gateway not serving while the command runs: %v", err)
			} else {
				c.Close()
			}
			cmd.Process.Signal(sig)
			rest, _ := io.ReadAll(br)
			err = cmd.Wait()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 3 || !strings.Contains(string(rest), "got signal") {
				t.Errorf("after %s: %v, output %q; want the child's exit 3", sig, err, rest)
			}
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				t.Errorf("the gateway at %s still serves after run ended", addr)
			}
		})
	}
}

func TestCLIInjectBySelector(t *testing.T) {
	l := newLab(t)
	l.shop(t)
	cmd := l.faultline("inject", "http", "--local", "-n", "shop", "-l", "app=catalog,tier!=db", "--port", "8080",
		"--error-rate", "1", "--error-code", "503", "--duration", "2s")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFaults(t, l, 2)
	l.status(t, "catalog-1")
	l.status(t, "catalog-2")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v: %s", err, errb.String())
	}
	for _, want := range []string{"shop/catalog-1", "shop/catalog-2", "TOTAL"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "catalog-db") {
		t.Errorf("excluded target in output:\n%s", out.String())
	}
	// No match: exit 1, one line naming the selector.
	cmd = l.faultline("inject", "http", "--local", "-n", "shop", "-l", "app=ghost", "--duration", "2s", "--error-rate", "1", "--error-code", "500")
	errb.Reset()
	cmd.Stderr = &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(errb.String(), "no pods found matching selector") || strings.Count(errb.String(), "\n") != 1 {
		t.Errorf("no match: %v %q", err, errb.String())
	}
}
