package node

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// retryClient is a client with retries we did not write: Debian's
// python3-urllib3, retrying 503 at once up to `retries` times. It prints
// how many of its requests (to /PREFIX/0 .. /PREFIX/N-1) ended in 200.
const retryClient = `
import sys, urllib3
base, prefix, n, retries = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
http = urllib3.PoolManager()
ok = 0
for i in range(n):
    r = http.request("GET", "%s/%s/%d" % (base, prefix, i), retries=urllib3.Retry(total=retries, status_forcelist=[503], backoff_factor=0, raise_on_status=False))
    ok += r.status == 200
print(ok)
`

// TestFailFirstMakesRetriesDeterministic: "fail the first 2 attempts of
// each request" against a client with 3 retries gives no failure and
// exactly 2 failed attempts per request; with 1 retry every request fails.
func TestFailFirstMakesRetriesDeterministic(t *testing.T) {
	nd := newNode(t)
	script := filepath.Join(t.TempDir(), "client.py")
	if err := os.WriteFile(script, []byte(retryClient), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(prefix string, n, retries int) string {
		out, err := exec.Command("ip", "netns", "exec", nd.client.Name, "/usr/bin/python3", script,
			strings.TrimSuffix(nd.url, "/"), prefix, fmt.Sprint(n), fmt.Sprint(retries)).CombinedOutput()
		if err != nil {
			t.Fatalf("urllib3 client: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	const n = 50
	req := nd.httpRequest(time.Minute, &pb.HTTPFault{ErrorCode: 503, FailFirst: &pb.FailFirst{Attempts: 2}})
	req.Duration = durationpb.New(time.Minute)
	var three, one string
	c := withFault(t, nd, req, func() {
		three = run("a", n, 3)
		one = run("b", n, 1)
	})
	t.Logf("with 3 retries %s of %d succeeded, with 1 retry %s; counters %v", three, n, one, c)
	if three != fmt.Sprint(n) {
		t.Errorf("with 3 retries, %s of %d requests succeeded, want all", three, n)
	}
	if one != "0" {
		t.Errorf("with 1 retry, %s of %d requests succeeded, want none", one, n)
	}
	// 3 retries: 2 failed attempts and 1 success per request; 1 retry: 2
	// failed attempts.
	if c.GetErrored() != 4*n || c.GetRequests() != 5*n {
		t.Errorf("errored %d of %d attempts, want %d of %d", c.GetErrored(), c.GetRequests(), 4*n, 5*n)
	}
}

// retryAfterClient is urllib3 honouring Retry-After on 429, up to 5 times:
// it prints the final status and the seconds the request took.
const retryAfterClient = `
import sys, time, urllib3
http = urllib3.PoolManager()
t0 = time.monotonic()
r = http.request("GET", sys.argv[1], retries=urllib3.Retry(total=5, status_forcelist=[429], respect_retry_after_header=True, backoff_factor=0, raise_on_status=False))
print(r.status, round(time.monotonic() - t0, 3))
`

// TestTimelinePhases: a fault as a timeline, "429 with Retry-After: 1 for
// 2 s, then a 300 ms delay for 2 s, then nothing", seen by curl at each
// phase and by urllib3, which honours Retry-After until the 429s stop.
func TestTimelinePhases(t *testing.T) {
	nd := newNode(t)
	script := filepath.Join(t.TempDir(), "client.py")
	if err := os.WriteFile(script, []byte(retryAfterClient), 0o644); err != nil {
		t.Fatal(err)
	}
	curl := func() (string, time.Duration) {
		out, err := exec.Command("ip", "netns", "exec", nd.client.Name, "curl", "-s", "-o", "/dev/null", "--max-time", "10",
			"-w", "%{http_code} %header{retry-after} %{time_total}", nd.url).CombinedOutput()
		if err != nil {
			t.Fatalf("curl: %v: %s", err, out)
		}
		f := strings.Fields(string(out))
		secs, _ := time.ParseDuration(f[len(f)-1] + "s")
		return strings.Join(f[:len(f)-1], " "), secs
	}
	const phase = 2 * time.Second
	req := nd.httpRequest(10*time.Second, &pb.HTTPFault{Phases: []*pb.HTTPPhase{
		{Duration: durationpb.New(phase), ErrorRate: 1, ErrorCode: 429, ErrorHeaders: map[string]string{"Retry-After": "1"}},
		{Duration: durationpb.New(phase), AverageDelay: durationpb.New(300 * time.Millisecond)},
	}})
	c := withFault(t, nd, req, func() {
		t0 := time.Now() // the fault is listed: active now, or within its start
		if got, _ := curl(); got != "429 1" {
			t.Errorf("phase 1: curl got %q, want 429 with Retry-After: 1", got)
		}
		out, err := exec.Command("ip", "netns", "exec", nd.client.Name, "/usr/bin/python3", script, nd.url).CombinedOutput()
		if err != nil {
			t.Fatalf("urllib3: %v\n%s", err, out)
		}
		var status int
		var secs float64
		fmt.Sscan(string(out), &status, &secs)
		end := time.Since(t0)
		t.Logf("urllib3 honouring Retry-After: %d after %.3fs, done %s into the timeline", status, secs, end)
		// It retried through phase 1 and got its 200 in phase 2, delayed.
		if status != 200 || end < phase+300*time.Millisecond || end > 2*phase+time.Second {
			t.Errorf("urllib3: %d, done %s into the timeline; want 200 in phase 2 (after %s)", status, end, phase+300*time.Millisecond)
		}
		if time.Since(t0) < 2*phase-300*time.Millisecond {
			if got, took := curl(); got != "200" || took < 300*time.Millisecond {
				t.Errorf("phase 2: curl %q in %s, want 200 after 300ms", got, took)
			}
		}
		time.Sleep(time.Until(t0.Add(2*phase + 200*time.Millisecond)))
		if got, took := curl(); got != "200" || took > 200*time.Millisecond {
			t.Errorf("after the phases: curl %q in %s, want 200 at once", got, took)
		}
	})
	t.Logf("counters %v", c)
	if c.GetErrored() < 2 || c.GetDelayed() < 1 || c.GetUnmatched() < 1 {
		t.Errorf("counters %v: want 429s, a delayed request and one after the phases", c)
	}
}
