package node

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/faultline-dev/faultline/internal/testkit/netnstest"
)

type cliResult struct {
	code           int
	stdout, stderr string
}

func faultline(t *testing.T, args ...string) cliResult {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "faultline"), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return cliResult{code, out.String(), errb.String()}
}

func TestCLIErrors(t *testing.T) {
	nd := newNode(t)
	base := []string{"inject", "http", "--socket", nd.socket, "--netns", nd.pod.Path}
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"missing port", append(base, "--duration", "5s"), 2, "--port must be in 1-65535, got 0"},
		{"missing duration", append(base, "--port", "8080"), 2, "--duration is required"},
		{"unknown flag", append(base, "--port", "8080", "--duration", "5s", "--bogus"), 2, "unknown flag: --bogus"},
		{"bad duration", append(base, "--port", "8080", "--duration", "soon"), 2, `invalid argument "soon" for "--duration"`},
		{"netns and pid", append(base, "--pid", "1", "--port", "8080", "--duration", "5s"), 2, "give --netns or --pid, not both"},
		{"server-side validation", append(base, "--port", "8080", "--duration", "5s", "--error-rate", "2", "--error-code", "500"), 2, "errorRate must be in the range [0, 1], got 2"},
		{"bad error header", append(base, "--port", "8080", "--duration", "5s", "--error-header", "nocolon"), 2, "--error-header \"nocolon\" must look like 'Name: value'"},
		{"no daemon", []string{"list", "--socket", filepath.Join(t.TempDir(), "none.sock")}, 1, "cannot reach faultlined"},
		{"unknown fault", []string{"revoke", "nope", "--socket", nd.socket}, 1, `no active fault with id "nope"`},
		{"revoke without id", []string{"revoke", "--socket", nd.socket}, 2, "revoke takes exactly one fault id"},
		{"unknown command", []string{"explode"}, 2, "unknown command"},
		{"host netns", []string{"inject", "http", "--socket", nd.socket, "--netns", "/proc/self/ns/net", "--port", "8080", "--duration", "5s"}, 1, "host's network namespace"},
		{"fifo as netns", []string{"inject", "http", "--socket", nd.socket, "--netns", fifo, "--port", "8080", "--duration", "5s"}, 2, "is not a network namespace"},
		{"fail-first-key alone", append(base, "--port", "8080", "--duration", "5s", "--error-code", "503", "--fail-first-key", "Idempotency-Key"), 2, "--fail-first-key needs --fail-first N"},
		{"fail-first and error-rate", append(base, "--port", "8080", "--duration", "5s", "--error-code", "503", "--error-rate", "0.5", "--fail-first", "2"), 2, "give errorRate or failFirst, not both"},
		{"tcp without toxic", []string{"inject", "tcp", "--socket", nd.socket, "--netns", nd.pod.Path, "--port", "6379", "--duration", "5s"}, 2, "give at least one --toxic"},
		{"tcp unknown toxic", []string{"inject", "tcp", "--socket", nd.socket, "--netns", nd.pod.Path, "--port", "6379", "--duration", "5s", "--toxic", "downstream:teleport=1"}, 2, `unknown toxic "teleport"`},
		{"tcp bad direction", []string{"inject", "tcp", "--socket", nd.socket, "--netns", nd.pod.Path, "--port", "6379", "--duration", "5s", "--toxic", "sideways:latency=1ms"}, 2, "must start with upstream: or downstream:"},
		{"tcp zero bandwidth", []string{"inject", "tcp", "--socket", nd.socket, "--netns", nd.pod.Path, "--port", "6379", "--duration", "5s", "--toxic", "downstream:bandwidth=0"}, 2, "downstream[0].bandwidth.rate must be a positive number"},
		{"tcp negative timeout", []string{"inject", "tcp", "--socket", nd.socket, "--netns", nd.pod.Path, "--port", "6379", "--duration", "5s", "--toxic", "upstream:timeout=-1s"}, 2, "upstream[0].timeout.timeout must not be negative"},
		{"tcp stray key", []string{"inject", "tcp", "--socket", nd.socket, "--netns", nd.pod.Path, "--port", "6379", "--duration", "5s", "--toxic", "upstream:latency=5ms,rate=3"}, 2, `latency takes no "rate"`},
		{"bad log level", []string{"run", "--local", "--log-level", "loud", "--", "true"}, 2, `invalid argument "loud" for "--log-level"`},
		{"bad log format", []string{"run", "--local", "--log-format", "yaml", "--", "true"}, 2, `--log-format: must be text or json, got "yaml"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := faultline(t, tc.args...)
			if r.code != tc.code {
				t.Errorf("exit %d, want %d (stderr %q)", r.code, tc.code, r.stderr)
			}
			if lines := strings.Count(r.stderr, "\n"); lines != 1 || !strings.HasPrefix(r.stderr, "faultline: ") || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("stderr %q: want one line containing %q", r.stderr, tc.want)
			}
		})
	}
	if n := len(attachedPrograms(t, nd)); n != 0 {
		t.Errorf("bad input left %d programs attached", n)
	}
}

func TestCLIInjectPrintsCounters(t *testing.T) {
	nd := newNode(t)
	done := make(chan cliResult, 1)
	go func() {
		done <- faultline(t, "inject", "http", "--socket", nd.socket, "--netns", nd.pod.Path, "--port", "8080",
			"--error-rate", "1", "--error-code", "503", "--duration", "2s", "--id", "cli-test")
	}()
	nd.waitFaults(t, 1)
	list := faultline(t, "list", "--socket", nd.socket)
	if list.code != 0 || !strings.Contains(list.stdout, "cli-test") || !strings.Contains(list.stdout, nd.pod.Path) {
		t.Errorf("list: %+v", list)
	}
	for range 3 {
		nd.get(t)
	}
	r := <-done
	if r.code != 0 || !strings.Contains(r.stdout, "http fault cli-test") || !strings.Contains(r.stdout, "(expired)") {
		t.Fatalf("inject: %+v", r)
	}
	fields := strings.Fields(strings.Split(strings.TrimSpace(r.stdout), "\n")[2])
	if fields[0] != "3" || fields[3] != "3" {
		t.Errorf("counters line %v, want 3 requests and 3 errored", fields)
	}
}

func TestCLIInterruptRevokes(t *testing.T) {
	nd := newNode(t)
	cmd := exec.Command(filepath.Join(binDir, "faultline"), "inject", "http", "--socket", nd.socket, "--netns", nd.pod.Path,
		"--port", "8080", "--delay", "50ms", "--duration", "10m", "-o", "json")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	nd.waitFaults(t, 1)
	nd.get(t)
	nd.get(t)
	cmd.Process.Signal(syscall.SIGINT)
	interrupted := time.Now()
	err := cmd.Wait()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 130 {
		t.Errorf("exit %v, want 130; stderr %q", err, errb.String())
	}
	if !strings.Contains(out.String(), `"endReason": "revoked"`) || !strings.Contains(out.String(), `"requests": "2"`) {
		t.Errorf("stdout %s: want the revoked fault's counters", out.String())
	}
	nd.assertDirectWithin(t, time.Second, nil)
	nd.waitFaults(t, 0)
	t.Logf("revoked and direct %s after SIGINT", time.Since(interrupted).Round(time.Millisecond))
}

func TestCLIInjectByPID(t *testing.T) {
	nd := newNode(t)
	proc := exec.Command("ip", "netns", "exec", nd.pod.Name, "sleep", "60")
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { proc.Process.Kill(); proc.Wait() }()
	done := make(chan cliResult, 1)
	go func() {
		done <- faultline(t, "inject", "http", "--socket", nd.socket, "--pid", fmt.Sprint(proc.Process.Pid), "--port", "8080",
			"--error-rate", "1", "--error-code", "503", "--duration", "1s")
	}()
	nd.waitFaults(t, 1)
	if code, _ := nd.get(t); code != 503 {
		t.Errorf("fault by pid: %d, want 503", code)
	}
	if r := <-done; r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("pid %d", proc.Process.Pid)) {
		t.Errorf("inject by pid: %+v", r)
	}
}

// TestRunKilledTakesItsCommand: faultline run killed with SIGKILL leaves
// no command behind (its faults would outlive the run otherwise).
func TestRunKilledTakesItsCommand(t *testing.T) {
	netnstest.RequireRoot(t)
	// The command is known by a duration of its own (Debian's sh has no
	// exec -a).
	marker := fmt.Sprintf("sleep 30.%06d", time.Now().UnixNano()%1e6)
	cmd := exec.Command(filepath.Join(binDir, "faultline"), "run", "--local", "--socket", filepath.Join(t.TempDir(), "none.sock"),
		"--", "sh", "-c", "exec "+marker)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	// Anchored: faultline run's own command line holds the marker too.
	child := func() bool { return exec.Command("pgrep", "-f", "^"+marker+"$").Run() == nil }
	deadline := time.Now().Add(10 * time.Second)
	for !child() {
		select {
		case <-exited:
			t.Fatalf("faultline run exited before its command started: %v; stderr: %q", cmd.ProcessState, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the command did not start within 10s; stderr: %q", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Kill()
	<-exited
	deadline = time.Now().Add(time.Second)
	for child() {
		if time.Now().After(deadline) {
			exec.Command("pkill", "-f", "^"+marker+"$").Run()
			t.Fatal("the command outlived faultline run by a second")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFaultlinedKeepsAFileAtItsSocketPath: --socket replaces a stale
// socket, never a file of another kind.
func TestFaultlinedKeepsAFileAtItsSocketPath(t *testing.T) {
	netnstest.RequireRoot(t)
	path := filepath.Join(t.TempDir(), "precious")
	if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, "faultlined"), "--socket", path)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("faultlined started on a regular file: %s", out)
	}
	if b, _ := os.ReadFile(path); string(b) != "keep me" {
		t.Errorf("the file at --socket is now %q", b)
	}
	if !strings.Contains(string(out), "not a socket") {
		t.Errorf("output %q, want it to say the file is not a socket", out)
	}
}

// TestCLIRewriteSeenByCurl: a response rewrite given on the command line,
// as Debian's curl sees it: status, headers and body replaced, framing
// right.
func TestCLIRewriteSeenByCurl(t *testing.T) {
	nd := newNode(t)
	res := make(chan cliResult, 1)
	go func() {
		res <- faultline(t, "inject", "http", "--socket", nd.socket, "--netns", nd.pod.Path, "--port", "8080", "--duration", "2s",
			"--rewrite-status", "503", "--rewrite-header", "Retry-After: 2", "--rewrite-body", "come back later\n")
	}()
	nd.waitFaults(t, 1)
	out, err := exec.Command("ip", "netns", "exec", nd.client.Name, "curl", "-sS", "-i", "--max-time", "5", nd.url).CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v: %s", err, out)
	}
	got := strings.ReplaceAll(string(out), "\r\n", "\n")
	for _, want := range []string{"HTTP/1.1 503 Service Unavailable\n", "Retry-After: 2\n", "Content-Length: 16\n", "\n\ncome back later\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("curl -i lacks %q:\n%s", want, got)
		}
	}
	if r := <-res; r.code != 0 {
		t.Errorf("inject: exit %d: %s", r.code, r.stderr)
	}
}
