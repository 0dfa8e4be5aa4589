package httpfault

import (
	"strconv"
	"testing"
	"time"

	"github.com/faultline-dev/faultline/pkg/fault"
)

func TestDelay(t *testing.T) {
	l := newLab(t, nil)
	// Baseline: the fastest direct request, to subtract. Not the mean: one
	// slow request on a loaded machine would make every delay look short.
	base := time.Hour
	for range 20 {
		base = min(base, do(t, l.http, "GET", l.url+"/", nil).took)
	}
	l.start(t, &fault.HTTP{Delay: delayed(200*time.Millisecond, 50*time.Millisecond)})
	// A delay is never shorter than asked; a loaded machine can only make
	// requests slower, so the upper bounds are loose (make bench measures).
	const n, slack = 240, time.Second
	res := parallel(t, n, 12, func(int) result { return do(t, l.http, "GET", l.url+"/x", nil) })
	var sum time.Duration
	for _, r := range res {
		if r.status != 200 || r.body != "app8080:/x" {
			t.Fatalf("got %d %q, want 200 from the app", r.status, r.body)
		}
		added := r.took - base
		if added < 140*time.Millisecond || added > 250*time.Millisecond+slack {
			t.Errorf("added latency %s outside [150ms, 250ms] (+%s slack)", added, slack)
		}
		sum += added
	}
	mean := sum / n
	if mean < 180*time.Millisecond || mean > 300*time.Millisecond {
		t.Errorf("mean added latency %s, want about 200ms", mean)
	}
	t.Logf("mean added latency %s over %d requests (direct %s)", mean, n, base)
}

func TestErrorRate(t *testing.T) {
	l := newLab(t, nil)
	p := l.start(t, &fault.HTTP{ErrorRate: 0.3, ErrorStatus: 503})
	const n = 600
	res := parallel(t, n, 16, func(int) result { return do(t, l.http, "GET", l.url+"/", nil) })
	errs := 0
	for _, r := range res {
		switch r.status {
		case 503:
			errs++
		case 200:
		default:
			t.Fatalf("unexpected status %d", r.status)
		}
	}
	withinBinomial(t, "errors", errs, n, 0.3)
	if c := p.Counters(); c.Requests != n || c.Errored != uint64(errs) {
		t.Errorf("counters %+v, want %d requests and %d errored", c, n, errs)
	}
}

func TestErrorBodyAndHeaders(t *testing.T) {
	l := newLab(t, nil)
	l.start(t, &fault.HTTP{ErrorRate: 1, ErrorStatus: 418, ErrorBody: []byte(`{"error":"teapot"}`),
		ErrorHeaders: []fault.HeaderField{{Name: "Content-Type", Value: "application/json"}, {Name: "Retry-After", Value: "7"}}})
	r := do(t, l.http, "GET", l.url+"/", nil)
	if r.status != 418 || r.body != `{"error":"teapot"}` {
		t.Errorf("got %d %q", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if ra := r.header.Get("Retry-After"); ra != "7" {
		t.Errorf("Retry-After %q, want 7", ra)
	}
}

func TestBodylessStatusesHaveNoBody(t *testing.T) {
	l := newLab(t, nil)
	for _, code := range []int{204, 304} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			l.start(t, &fault.HTTP{ErrorRate: 1, ErrorStatus: code})
			c := l.client()
			for range 2 { // and the connection stays usable
				r := do(t, c, "GET", l.url+"/", nil)
				if r.status != code || r.body != "" || r.header.Get("Content-Length") != "" {
					t.Errorf("got %d %q Content-Length %q, want %d without a body", r.status, r.body, r.header.Get("Content-Length"), code)
				}
			}
		})
	}
}

func TestExcludeAndMatch(t *testing.T) {
	l := newLab(t, nil)
	p := l.start(t, &fault.HTTP{ErrorRate: 1, ErrorStatus: 500,
		Exclude: []string{"/health"},
		Match: fault.Match{Paths: []string{"/api/*", "/health"}, Methods: []string{"GET"},
			Headers: []fault.HeaderMatch{{Name: "X-Tenant", Value: "blue"}}}})
	blue := map[string]string{"X-Tenant": "blue"}
	for _, tc := range []struct {
		method, path string
		hdr          map[string]string
		want         int
	}{
		{"GET", "/api/items", blue, 500},
		{"GET", "/api/", blue, 500},
		{"GET", "/HEALTH", blue, 200}, // excluded, case-insensitive
		{"GET", "/health", blue, 200},
		{"GET", "/other", blue, 200},                                     // path not matched
		{"POST", "/api/items", blue, 200},                                // method not matched
		{"GET", "/api/items", nil, 200},                                  // header missing
		{"GET", "/api/items", map[string]string{"X-Tenant": "red"}, 200}, // header value differs
	} {
		if r := do(t, l.http, tc.method, l.url+tc.path, tc.hdr); r.status != tc.want {
			t.Errorf("%s %s %v: status %d, want %d", tc.method, tc.path, tc.hdr, r.status, tc.want)
		}
	}
	if c := p.Counters(); c.Requests != 8 || c.Errored != 2 || c.Unmatched != 6 {
		t.Errorf("counters %+v, want 8 requests, 2 errored, 6 unmatched", c)
	}
}

func TestDelayRate(t *testing.T) {
	l := newLab(t, nil)
	p := l.start(t, &fault.HTTP{Delay: fault.Delay{Average: 200 * time.Millisecond, Rate: 0.5}})
	const n = 300
	res := parallel(t, n, 50, func(int) result { return do(t, l.http, "GET", l.url+"/", nil) })
	// The counter says how many were delayed; each of those must have
	// taken the full delay. Load on a shared machine can slow others too,
	// so slow requests only bound the counter from above.
	delayed := int(p.Counters().Delayed)
	withinBinomial(t, "delayed", delayed, n, 0.5)
	slow := 0
	for _, r := range res {
		if r.took >= 200*time.Millisecond {
			slow++
		}
	}
	if slow < delayed {
		t.Errorf("delayed counter %d, but only %d requests took 200ms or more", delayed, slow)
	}
}
