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
