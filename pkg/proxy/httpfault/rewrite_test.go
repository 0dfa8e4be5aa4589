package httpfault

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/faultline-dev/faultline/pkg/fault"
)

// TestRewriteResponses: the application's real responses to matching
// requests come back with the rewritten status, headers and body, with
// Content-Length right (the Go client checks it) and streaming bodies
// handled; unmatched requests are untouched.
func TestRewriteResponses(t *testing.T) {
	l := newLab(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-App", "1")
		w.Header().Set("Cache-Control", "max-age=60")
		switch r.URL.Path {
		case "/stream", "/health": // chunked, flushed as it goes
			for i := range 5 {
				fmt.Fprintf(w, "part%d;", i)
				w.(http.Flusher).Flush()
			}
		default:
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"price": 10}`)
		}
	}))
	for _, tc := range []struct {
		name    string
		rw      *fault.Rewrite
		path    string
		status  int
		body    string
		headers map[string]string // "" means absent
	}{
		{"status and headers, streamed body kept", &fault.Rewrite{Status: 503, SetHeaders: []fault.HeaderField{{Name: "Retry-After", Value: "2"}}, RemoveHeaders: []string{"Cache-Control"}},
			"/stream", 503, "part0;part1;part2;part3;part4;", map[string]string{"Retry-After": "2", "Cache-Control": "", "X-App": "1"}},
		{"body replaced", &fault.Rewrite{ReplaceBody: true, Body: []byte(`{"price": -1}`)},
			"/item", 200, `{"price": -1}`, map[string]string{"Content-Type": "application/json", "Content-Length": "13"}},
		{"streamed body replaced", &fault.Rewrite{Status: 502, ReplaceBody: true, Body: []byte("upstream broke")},
			"/stream", 502, "upstream broke", map[string]string{"Content-Length": "14", "X-App": "1"}},
		{"excluded path untouched", &fault.Rewrite{Status: 500},
			"/health", 200, "part0;part1;part2;part3;part4;", map[string]string{"Cache-Control": "max-age=60"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := l.start(t, &fault.HTTP{Rewrite: tc.rw, Exclude: []string{"/health"}})
			resp, err := l.http.Get(l.url + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != tc.status || string(b) != tc.body {
				t.Fatalf("got %d %q (%v), want %d %q", resp.StatusCode, b, err, tc.status, tc.body)
			}
			for k, want := range tc.headers {
				got := resp.Header.Get(k)
				if k == "Content-Length" {
					got = fmt.Sprint(resp.ContentLength)
				}
				if got != want {
					t.Errorf("%s: %q, want %q", k, got, want)
				}
			}
			// The connection stays usable.
			if r := do(t, l.http, "GET", l.url+"/health", nil); r.status != 200 {
				t.Errorf("next request on the connection: %d", r.status)
			}
			if c := p.Counters(); c.Requests != 2 {
				t.Errorf("counters %+v", c)
			}
		})
	}
	// HEAD: the new body's length, no body.
	l.start(t, &fault.HTTP{Rewrite: &fault.Rewrite{ReplaceBody: true, Body: []byte("twelve bytes")}})
	resp, err := l.http.Head(l.url + "/item")
	if err != nil || resp.ContentLength != 12 {
		t.Fatalf("HEAD: %v %v", resp, err)
	}
	resp.Body.Close()
	if !strings.HasPrefix(resp.Proto, "HTTP/1.") {
		t.Errorf("went over %s", resp.Proto)
	}
}
