// Package h2test sends hostile HTTP/2 clients' floods and reports how the
// server ended them, for the proxy's tests and the daemon's.
package h2test

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// Flood writes a hostile client's frames after the preface and SETTINGS;
// it ends with a write error once the server closes.
type Flood func(w io.Writer, fr *http2.Framer) error

// Floods are the two: 100 MiB of CONTINUATION on one stream, and
// a HEADERS frame declaring 16 MiB - 1 followed by its bytes.
var Floods = map[string]Flood{
	"continuation flood": func(_ io.Writer, fr *http2.Framer) error {
		block := bytes.Repeat([]byte{0x40, 0x01, 'x', 0x7f, 0x00}, 16<<10/5) // literal x: (empty), incrementally indexed
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:100]}); err != nil {
			return err
		}
		for range 6400 { // 100 MiB at most
			if err := fr.WriteContinuation(1, false, block); err != nil {
				return err
			}
		}
		return nil
	},
	"16 MiB frame": func(w io.Writer, _ *http2.Framer) error {
		if _, err := w.Write([]byte{0xff, 0xff, 0xff, byte(http2.FrameHeaders), 0x4, 0, 0, 0, 1}); err != nil {
			return err
		}
		chunk := make([]byte, 64<<10)
		for range 256 {
			if _, err := w.Write(chunk); err != nil {
				return err
			}
		}
		return nil
	},
}

// Verdict sends a flood on a new HTTP/2 connection made by dial and
// returns how the server ended it (its GOAWAY code, or "closed") and the
// bytes it took before.
func Verdict(t testing.TB, dial func(context.Context, string, string) (net.Conn, error), addr string, send Flood) (string, int64) {
	t.Helper()
	c, err := dial(context.Background(), "tcp", addr)
	if err != nil {
		t.Error(err)
		return "", 0
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	cw := &countingWriter{w: c}
	io.WriteString(cw, http2.ClientPreface)
	fr := http2.NewFramer(cw, c)
	fr.WriteSettings()
	verdict := make(chan string, 1)
	go func() {
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				verdict <- "closed"
				return
			}
			if ga, ok := f.(*http2.GoAwayFrame); ok {
				verdict <- ga.ErrCode.String()
				return
			}
		}
	}()
	go send(cw, fr)
	select {
	case v := <-verdict:
		return v, cw.n.Load()
	case <-time.After(10 * time.Second):
		t.Error("the server neither sent GOAWAY nor closed within 10s")
		return "", 0
	}
}

type countingWriter struct {
	w io.Writer
	n atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}
