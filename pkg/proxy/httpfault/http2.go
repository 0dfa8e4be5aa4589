package httpfault

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/faultline-dev/faultline/pkg/fault"
)

// Cleartext HTTP/2 (prior knowledge) is relayed frame by frame between the
// client's connection and the proxy's own connection to the application,
// one for one, so SETTINGS, PING, flow control, GOAWAY and message
// boundaries are the peers' own. x/net/http2's Framer reads and writes the
// frames; each direction has one writer goroutine that writes what is
// queued for it, in order, and flushes when its queue is empty, as
// grpc-go's loopy writer does. Readers and timers only queue: no socket
// write happens under the stream table's lock.
//
// The relay steps in on four things only:
//   - Request header blocks are decoded (to decide) and re-encoded toward
//     the application, and client streams are renumbered in the order
//     they go upstream: a delayed stream simply goes later. A stream the
//     client resets during its delay never reaches the application.
//   - The rule's answers are written to the client by the relay, with
//     never-indexed header fields, so the client's HPACK table, which
//     belongs to the application's encoder, is untouched.
//   - DATA the application will never see (for an answered stream) is
//     credited back to the client with a connection WINDOW_UPDATE, and
//     bytes of answers' bodies are taken out of the client's next
//     connection WINDOW_UPDATE, so both ends keep consistent windows.
//   - SETTINGS_MAX_FRAME_SIZE is dropped from both peers' SETTINGS, so
//     frames stay at the 16 KiB default, which bounds what one frame can
//     make the proxy hold; request header lists are bounded by the
//     application's SETTINGS_MAX_HEADER_LIST_SIZE (at most 1 MiB), and a
//     CONTINUATION flood ends the connection with PROTOCOL_ERROR, as a Go
//     server does.
//
// Response header blocks from the application pass untouched, so a
// response delay is not offered on HTTP/2: delays are always spent before
// the request goes upstream.

const (
	// frameSize is the frame size both sides keep to: the default.
	frameSize = 16 << 10
	// maxHeaderList bounds a request's decoded header list.
	maxHeaderList = 1 << 20
	// maxAnswerBody bounds an answer's body on HTTP/2, so it fits any
	// client's initial flow-control window.
	maxAnswerBody = 16 << 10
	// maxQueued bounds what one direction may have queued; a reader waits
	// beyond it, as it would on a full socket.
	maxQueued = 4 << 20
	// maxResets bounds the streams the client reset that the relay still
	// maps, for what the application sends on them before it sees the reset.
	maxResets = 256
)

// h2 is one HTTP/2 client connection relayed to its own connection to the
// application.
type h2 struct {
	p      *Proxy
	client net.Conn
	cbr    *bufio.Reader // the client side, with the preface still in it
	cbw    *bufio.Writer
	up     net.Conn

	toUp, toClient *h2writer

	appTableSize atomic.Uint32 // the application's SETTINGS_HEADER_TABLE_SIZE
	appHeaderMax atomic.Uint32 // its SETTINGS_MAX_HEADER_LIST_SIZE, capped

	mu          sync.Mutex           // the stream table and the connection's state
	streams     map[uint32]*h2stream // by client stream ID
	byUp        map[uint32]*h2stream // by upstream stream ID
	maxClientID uint32
	nextUp      uint32
	started     bool     // the writers exist: a drain can be carried out
	upGoAway    bool     // the application sent GOAWAY
	ourGoAway   bool     // draining: the client gets (or got) our GOAWAY
	goAwaySent  bool     // queued
	settingsIn  bool     // the application's SETTINGS reached the client's queue
	goAwayLast  uint32   // the last client stream taken after ourGoAway
	injected    uint32   // connection DATA bytes the relay sent on its own
	resets      []uint32 // upstream IDs of streams the client reset, oldest first
	drained     chan struct{}
	ended       chan struct{}
}

type streamState int

const (
	streamHeld     streamState = iota // delayed: frames queue until release
	streamOpen                        // sent upstream
	streamAnswered                    // answered by the relay; the application never sees it
)

type h2stream struct {
	cid, uid     uint32
	state        streamState
	fields       []hpack.HeaderField
	endStream    bool // the request's HEADERS ended it
	clientDone   bool
	upstreamDone bool
	reset        bool     // by the client, while open: kept in byUp only
	held         []func() // frames that arrived during the delay, to queue on release
	timer        *alarm
	ring         func()    // what its timer does: release or answer it
	seen         time.Time // when its request head was decoded, if not delayed
}

func newH2(p *Proxy, client net.Conn, cbr *bufio.Reader, cbw *bufio.Writer) *h2 {
	c := &h2{
		p: p, client: client, cbr: cbr, cbw: cbw,
		streams: map[uint32]*h2stream{}, byUp: map[uint32]*h2stream{},
		nextUp: 1, drained: make(chan struct{}), ended: make(chan struct{}),
	}
	c.appTableSize.Store(4096)
	c.appHeaderMax.Store(maxHeaderList)
	return c
}

// serve relays the connection until either side ends it; draining says
// Shutdown has begun.
func (c *h2) serve(draining bool) {
	defer close(c.ended)
	up, err := c.p.dial()
	if err != nil {
		c.p.upstreamErrors.Add(1)
		c.client.Close() // the client sees the connection close before any SETTINGS
		return
	}
	c.mu.Lock()
	c.up = up
	c.mu.Unlock()
	ubr := readerPool.Get().(*bufio.Reader)
	ubw := writerPool.Get().(*bufio.Writer)
	ubr.Reset(up)
	ubw.Reset(up)
	defer func() {
		ubr.Reset(nil)
		readerPool.Put(ubr)
		ubw.Reset(nil)
		writerPool.Put(ubw)
	}()
	c.toUp = newH2Writer(ubw, up, c.p)
	c.toClient = newH2Writer(c.cbw, c.client, c.p)
	// The preface goes first, as received.
	pre, _ := c.cbr.Peek(len(h2Preface))
	c.toUp.queueFrom(pre)
	_, _ = c.cbr.Discard(len(h2Preface))
	c.mu.Lock()
	c.started = true
	draining = draining || c.ourGoAway
	c.ourGoAway = draining
	c.mu.Unlock()
	if draining {
		c.startDrain()
	}
	// Either side ending ends the connection: what is queued for the other
	// side still goes out, then its socket closes, which ends its reader.
	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		err := c.relayUpstream(ubr)
		c.p.Logger.Debug("http2 upstream side ended", "err", err)
		c.toClient.finish()
		c.client.Close()
	}()
	err = c.relayClient()
	c.p.Logger.Debug("http2 client side ended", "err", err)
	c.toUp.finish()
	up.Close()
	<-upDone
	c.stopTimers()
	c.toUp.stop()
	c.toClient.stop()
}

// drain ends the connection gracefully: the client gets a GOAWAY naming
// the last stream it opened, held streams go on at once (the fault is
// over), and the connection closes when no stream is left.
func (c *h2) drain() {
	c.mu.Lock()
	if c.ourGoAway {
		c.mu.Unlock()
		return
	}
	c.ourGoAway = true
	started := c.started
	c.mu.Unlock()
	if started {
		c.startDrain()
	}
}

// startDrain carries a drain out once the writers exist.
func (c *h2) startDrain() {
	c.mu.Lock()
	c.goAwayLast = c.maxClientID
	for _, st := range c.streams {
		if st.state == streamHeld && st.timer != nil && st.timer.Stop() {
			// Its fate was decided under the fault; an answer stays an
			// answer, a delay ends now.
			st.timer = newAlarm(0, st.ring)
		}
	}
	c.sendGoAwayLocked()
	c.checkDrainedLocked()
	c.mu.Unlock()
	c.toClient.kick()
	go func() {
		select {
		case <-c.drained:
			c.toClient.finish() // the frames that ended the last streams go out first
			c.toUp.finish()
			c.close()
		case <-c.ended:
		case <-c.p.killCtx.Done():
			c.close()
		}
	}()
}

func (c *h2) close() {
	c.client.Close()
	c.mu.Lock()
	if c.up != nil {
		c.up.Close()
	}
	c.mu.Unlock()
}

// relayClient reads the client's frames and queues what goes upstream.
func (c *h2) relayClient() error {
	fr := http2.NewFramer(nil, c.cbr)
	fr.SetMaxReadFrameSize(frameSize)
	fr.SetReuseFrames()
	dec := hpack.NewDecoder(4096, nil)
	fr.ReadMetaHeaders = dec
	for {
		dec.SetAllowedMaxDynamicTableSize(max(4096, c.appTableSize.Load()))
		fr.MaxHeaderListSize = c.appHeaderMax.Load()
		f, err := fr.ReadFrame()
		if se, ok := err.(http2.StreamError); ok {
			c.refuseBadStream(se)
			continue
		}
		if err != nil {
			var code http2.ErrCode
			if errors.Is(err, http2.ErrFrameTooLarge) {
				code = http2.ErrCodeFrameSize
			} else if ce, ok := err.(http2.ConnectionError); ok {
				code = http2.ErrCode(ce)
			} else {
				return err
			}
			// A protocol error: end the connection as a Go server does.
			c.mu.Lock()
			last := c.maxClientID
			c.mu.Unlock()
			c.toClient.queue(func(w *http2.Framer) error { return w.WriteGoAway(last, code, nil) })
			return err
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			c.clientHeaders(f)
		case *http2.DataFrame:
			c.clientData(f)
		case *http2.RSTStreamFrame:
			c.clientReset(f)
		case *http2.WindowUpdateFrame:
			c.clientWindowUpdate(f)
		case *http2.SettingsFrame:
			c.relaySettings(c.toUp, f, nil)
		case *http2.PingFrame:
			ack, data := f.IsAck(), f.Data
			c.toUp.queue(func(w *http2.Framer) error { return w.WritePing(ack, data) })
		case *http2.GoAwayFrame:
			// About pushed streams, whose IDs both sides share.
			last, code, debug := f.LastStreamID, f.ErrCode, bytes.Clone(f.DebugData())
			c.toUp.queue(func(w *http2.Framer) error { return w.WriteGoAway(last, code, debug) })
		case *http2.PushPromiseFrame:
			return errors.New("http2: PUSH_PROMISE from a client")
		}
		// PRIORITY and unknown frames are advisory: dropped.
		if !frameBuffered(c.cbr) {
			c.toUp.kick()
			c.toClient.kick()
		}
		c.toUp.waitSpace()
	}
}

// frameBuffered reports whether br holds a whole frame: if not, the
// reader is about to wait for its peer, and what it queued must go out.
func frameBuffered(br *bufio.Reader) bool {
	if br.Buffered() < 9 {
		return false
	}
	h, _ := br.Peek(9) // buffered: does not block
	return br.Buffered() >= 9+(int(h[0])<<16|int(h[1])<<8|int(h[2]))
}

// refuseBadStream resets a stream whose headers the Framer refused, as a
// Go server does; the header block was decoded, so HPACK stays in step.
func (c *h2) refuseBadStream(se http2.StreamError) {
	c.mu.Lock()
	if se.StreamID > c.maxClientID {
		c.maxClientID = se.StreamID
	}
	c.mu.Unlock()
	c.toClient.queue(func(w *http2.Framer) error { return w.WriteRSTStream(se.StreamID, se.Code) })
}

func (c *h2) clientHeaders(f *http2.MetaHeadersFrame) {
	cid, end := f.StreamID, f.StreamEnded()
	fields := append([]hpack.HeaderField(nil), f.Fields...)
	c.mu.Lock()
	defer c.mu.Unlock()
	if cid%2 == 1 && cid > c.maxClientID {
		c.maxClientID = cid
		c.newStreamLocked(cid, fields, end, f.Truncated)
		return
	}
	st := c.streams[cid]
	if st == nil || st.state == streamAnswered {
		return // trailers of a closed or answered stream
	}
	st.clientDone = st.clientDone || end
	send := func() { c.queueHeadersLocked(st, fields, end, time.Time{}) }
	if st.state == streamHeld {
		st.held = append(st.held, send)
		return
	}
	send()
	c.cleanupLocked(st)
}

// newStreamLocked decides the fate of a new request stream.
func (c *h2) newStreamLocked(cid uint32, fields []hpack.HeaderField, end, truncated bool) {
	st := &h2stream{cid: cid, fields: fields, endStream: end, clientDone: end}
	c.streams[cid] = st
	switch {
	case (c.ourGoAway && cid > c.goAwayLast) || c.upGoAway:
		c.refuseLocked(st)
		return
	case truncated:
		// Too many header bytes: answered as a Go server answers it.
		c.answerLocked(st, &fault.Answer{Status: 431})
		return
	}
	d := c.p.decide(h2request(fields))
	switch {
	case d.Answer != nil:
		st.state = streamHeld // until answered: its frames are dropped then
		a := d.Answer
		start := time.Now()
		st.ring = func() {
			observe(c.p.Delays, start)
			c.mu.Lock()
			if c.streams[cid] == st && st.state == streamHeld {
				c.answerLocked(st, a)
			}
			c.mu.Unlock()
			c.toClient.kick()
		}
		st.timer = c.p.pace.after(d.Delay, st.ring)
	case d.Delay > 0:
		st.state = streamHeld
		start := time.Now()
		st.ring = func() { observe(c.p.Delays, start); c.release(st) }
		st.timer = c.p.pace.after(d.Delay, st.ring)
	default:
		if c.p.Overhead != nil {
			st.seen = time.Now()
		}
		c.openLocked(st)
	}
}

// openLocked sends a stream's request upstream, then what queued for it.
// Upstream IDs are given in queue order, which is sending order.
func (c *h2) openLocked(st *h2stream) {
	st.state = streamOpen
	st.uid = c.nextUp
	c.nextUp += 2
	c.byUp[st.uid] = st
	c.queueHeadersLocked(st, st.fields, st.endStream, st.seen)
	st.fields = nil
	for _, send := range st.held {
		send()
	}
	st.held = nil
	c.cleanupLocked(st)
}

// release opens a delayed stream when its delay has passed.
func (c *h2) release(st *h2stream) {
	c.mu.Lock()
	if st.state == streamHeld && c.streams[st.cid] == st {
		if c.upGoAway {
			c.refuseLocked(st)
		} else {
			c.openLocked(st)
		}
	}
	c.mu.Unlock()
	c.toUp.kick()
	c.toClient.kick()
}

// queueHeadersLocked queues a header block for the application, encoded
// by the writer, in sending order, with the application's table size.
// A request not delayed gives when its head was decoded, to observe the
// proxy's overhead.
func (c *h2) queueHeadersLocked(st *h2stream, fields []hpack.HeaderField, end bool, seen time.Time) {
	c.toUp.queue(func(w *http2.Framer) error {
		block := c.toUp.encode(fields, min(4096, c.appTableSize.Load()), false)
		err := writeHeaderBlock(w, st.uid, block, end)
		if err == nil && !seen.IsZero() {
			observe(c.p.Overhead, seen) // written, if not yet flushed
		}
		return err
	})
}

// writeHeaderBlock writes a header block as HEADERS and CONTINUATION
// frames of at most frameSize.
func writeHeaderBlock(w *http2.Framer, sid uint32, block []byte, end bool) error {
	first := block[:min(len(block), frameSize)]
	block = block[len(first):]
	if err := w.WriteHeaders(http2.HeadersFrameParam{StreamID: sid, BlockFragment: first, EndStream: end, EndHeaders: len(block) == 0}); err != nil {
		return err
	}
	for len(block) > 0 {
		frag := block[:min(len(block), frameSize)]
		block = block[len(frag):]
		if err := w.WriteContinuation(sid, len(block) == 0, frag); err != nil {
			return err
		}
	}
	return nil
}

// answerLocked writes the rule's answer for a stream: a gRPC
// trailers-only response, or an HTTP status with a small body.
func (c *h2) answerLocked(st *h2stream, a *fault.Answer) {
	st.state = streamAnswered
	st.held = nil
	var fields []hpack.HeaderField
	var body []byte
	if a.GRPCStatus != 0 {
		fields = []hpack.HeaderField{{Name: ":status", Value: "200"}, {Name: "content-type", Value: "application/grpc"},
			{Name: "grpc-status", Value: strconv.Itoa(a.GRPCStatus)}}
		if a.GRPCMessage != "" {
			fields = append(fields, hpack.HeaderField{Name: "grpc-message", Value: fault.PercentEncode(a.GRPCMessage)})
		}
	} else {
		fields = []hpack.HeaderField{{Name: ":status", Value: strconv.Itoa(a.Status)}}
		typed := false
		for _, h := range a.Header {
			fields = append(fields, hpack.HeaderField{Name: strings.ToLower(h.Name), Value: h.Value})
			typed = typed || h.Name == "Content-Type"
		}
		if !fault.Bodyless(a.Status) {
			body = a.Body[:min(len(a.Body), maxAnswerBody)]
			if len(body) > 0 && !typed {
				fields = append(fields, hpack.HeaderField{Name: "content-type", Value: "text/plain; charset=utf-8"})
			}
			fields = append(fields, hpack.HeaderField{Name: "content-length", Value: strconv.Itoa(len(body))})
		}
	}
	c.injected += uint32(len(body))
	cid, reset := st.cid, !st.clientDone
	c.toClient.queue(func(w *http2.Framer) error {
		if err := writeHeaderBlock(w, cid, c.toClient.encode(fields, 0, true), len(body) == 0); err != nil {
			return err
		}
		if len(body) > 0 {
			if err := w.WriteData(cid, true, body); err != nil {
				return err
			}
		}
		if reset {
			// Tell the client to stop sending the request body.
			return w.WriteRSTStream(cid, http2.ErrCodeNo)
		}
		return nil
	})
	delete(c.streams, st.cid)
	c.checkDrainedLocked()
}

// refuseLocked resets a stream the application will not take, so the
// client may retry it elsewhere.
func (c *h2) refuseLocked(st *h2stream) {
	st.state = streamAnswered
	delete(c.streams, st.cid)
	c.checkDrainedLocked()
	cid := st.cid
	c.toClient.queue(func(w *http2.Framer) error { return w.WriteRSTStream(cid, http2.ErrCodeRefusedStream) })
}

// zeros pads relayed DATA frames as they were padded: padding counts
// toward flow control.
var zeros [256]byte

func dataPadding(f *http2.DataFrame) []byte {
	if !f.Header().Flags.Has(http2.FlagDataPadded) {
		return nil
	}
	return zeros[:int(f.Header().Length)-1-len(f.Data())]
}

func (c *h2) clientData(f *http2.DataFrame) {
	cid, end, size := f.StreamID, f.StreamEnded(), f.Header().Length
	data, pad := bytes.Clone(f.Data()), dataPadding(f)
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.streams[cid]
	if st != nil && end {
		st.clientDone = true
	}
	switch {
	case st == nil || st.state == streamAnswered:
		if size > 0 {
			// Never reaching the application: the client gets its
			// connection window back.
			c.toClient.queue(func(w *http2.Framer) error { return w.WriteWindowUpdate(0, size) })
		}
		return
	case st.state == streamHeld:
		st.held = append(st.held, func() { c.queueDataLocked(c.toUp, st.uid, end, data, pad) })
		return
	}
	c.queueDataLocked(c.toUp, st.uid, end, data, pad)
	c.cleanupLocked(st)
}

func (c *h2) queueDataLocked(to *h2writer, sid uint32, end bool, data, pad []byte) {
	to.queueBytes(len(data), func(w *http2.Framer) error {
		if pad != nil {
			return w.WriteDataPadded(sid, end, data, pad)
		}
		return w.WriteData(sid, end, data)
	})
}

func (c *h2) clientReset(f *http2.RSTStreamFrame) {
	cid, code := f.StreamID, f.ErrCode
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.streams[cid]
	if st == nil {
		return
	}
	delete(c.streams, cid)
	if st.state == streamOpen {
		// What the application still sends on it goes to the client,
		// which ignores it but must decode its header blocks (HPACK) and
		// count its DATA against the connection window.
		uid := st.uid
		st.clientDone, st.reset = true, true
		c.resets = append(c.resets, uid)
		if len(c.resets) > maxResets {
			delete(c.byUp, c.resets[0])
			c.resets = c.resets[1:]
		}
		c.toUp.queue(func(w *http2.Framer) error { return w.WriteRSTStream(uid, code) })
	} else if st.timer != nil {
		st.timer.Stop() // given up during its delay: the application never sees it
	}
	c.checkDrainedLocked()
}

func (c *h2) clientWindowUpdate(f *http2.WindowUpdateFrame) {
	sid, inc := f.StreamID, f.Increment
	c.mu.Lock()
	defer c.mu.Unlock()
	if sid == 0 {
		// The application never sent the answers' bodies: it must not
		// get their credit.
		take := min(inc, c.injected)
		c.injected -= take
		if inc -= take; inc > 0 {
			c.toUp.queue(func(w *http2.Framer) error { return w.WriteWindowUpdate(0, inc) })
		}
		return
	}
	st := c.streams[sid]
	switch {
	case st == nil || st.state == streamAnswered:
	case st.state == streamHeld:
		st.held = append(st.held, func() {
			uid := st.uid
			c.toUp.queue(func(w *http2.Framer) error { return w.WriteWindowUpdate(uid, inc) })
		})
	default:
		uid := st.uid
		c.toUp.queue(func(w *http2.Framer) error { return w.WriteWindowUpdate(uid, inc) })
	}
}

// relaySettings relays a SETTINGS frame without SETTINGS_MAX_FRAME_SIZE
// (frames stay at the default size both ways); seen, if set, sees each
// setting first.
func (c *h2) relaySettings(to *h2writer, f *http2.SettingsFrame, seen func(http2.Setting)) {
	if f.IsAck() {
		to.queue(func(w *http2.Framer) error { return w.WriteSettingsAck() })
		return
	}
	var out []http2.Setting
	_ = f.ForeachSetting(func(s http2.Setting) error {
		if seen != nil {
			seen(s)
		}
		if s.ID != http2.SettingMaxFrameSize {
			out = append(out, s)
		}
		return nil
	})
	to.queue(func(w *http2.Framer) error { return w.WriteSettings(out...) })
}

// relayUpstream reads the application's frames and queues them for the
// client, renumbering streams back.
func (c *h2) relayUpstream(br *bufio.Reader) error {
	fr := http2.NewFramer(nil, br)
	fr.SetMaxReadFrameSize(frameSize)
	fr.SetReuseFrames()
	var block []func(*http2.Framer) error // a header block's frames, written together
	var blockCID uint32
	var blockStream *h2stream
	var blockEnds bool
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return err
		}
		switch f := f.(type) {
		case *http2.HeadersFrame:
			// A stream neither side knows any more (blockCID 0) gets its
			// block dropped: the application opened nothing the client
			// could decode it for.
			blockCID, blockStream = c.clientID(f.StreamID)
			blockEnds = f.StreamEnded()
			frag, end, endH, cid := bytes.Clone(f.HeaderBlockFragment()), f.StreamEnded(), f.HeadersEnded(), blockCID
			block = append(block[:0], func(w *http2.Framer) error {
				return w.WriteHeaders(http2.HeadersFrameParam{StreamID: cid, BlockFragment: frag, EndStream: end, EndHeaders: endH})
			})
			if blockCID == 0 {
				block = block[:0]
			}
			if endH {
				c.queueUpstreamBlock(block, blockStream, blockEnds)
			}
		case *http2.PushPromiseFrame:
			blockCID, _ = c.clientID(f.StreamID)
			blockStream, blockEnds = nil, false
			p := http2.PushPromiseParam{StreamID: blockCID, PromiseID: f.PromiseID, BlockFragment: bytes.Clone(f.HeaderBlockFragment()), EndHeaders: f.HeadersEnded()}
			block = append(block[:0], func(w *http2.Framer) error { return w.WritePushPromise(p) })
			if p.EndHeaders {
				c.queueUpstreamBlock(block, nil, false)
			}
		case *http2.ContinuationFrame:
			frag, endH, cid := bytes.Clone(f.HeaderBlockFragment()), f.HeadersEnded(), blockCID
			if cid != 0 {
				block = append(block, func(w *http2.Framer) error { return w.WriteContinuation(cid, endH, frag) })
			}
			if endH {
				c.queueUpstreamBlock(block, blockStream, blockEnds)
			}
		case *http2.DataFrame:
			c.upstreamData(f)
		case *http2.RSTStreamFrame:
			cid, code := f.StreamID, f.ErrCode
			c.mu.Lock()
			if st := c.byUp[cid]; st != nil {
				cid = st.cid
				if st.reset {
					cid = 0 // the client reset it first
				}
				delete(c.byUp, st.uid)
				if c.streams[st.cid] == st {
					delete(c.streams, st.cid)
				}
				c.checkDrainedLocked()
			} else if cid%2 == 1 {
				cid = 0
			}
			c.mu.Unlock()
			if cid != 0 {
				c.toClient.queue(func(w *http2.Framer) error { return w.WriteRSTStream(cid, code) })
			}
		case *http2.WindowUpdateFrame:
			cid, inc := f.StreamID, f.Increment
			if cid != 0 {
				cid, _ = c.clientID(cid)
			}
			if cid != 0 || f.StreamID == 0 {
				c.toClient.queue(func(w *http2.Framer) error { return w.WriteWindowUpdate(cid, inc) })
			}
		case *http2.SettingsFrame:
			c.relaySettings(c.toClient, f, func(s http2.Setting) {
				switch s.ID {
				case http2.SettingHeaderTableSize:
					c.appTableSize.Store(s.Val)
				case http2.SettingMaxHeaderListSize:
					c.appHeaderMax.Store(min(s.Val, maxHeaderList))
				}
			})
			if !f.IsAck() {
				c.mu.Lock()
				c.settingsIn = true
				c.sendGoAwayLocked()
				c.mu.Unlock()
			}
		case *http2.PingFrame:
			ack, data := f.IsAck(), f.Data
			c.toClient.queue(func(w *http2.Framer) error { return w.WritePing(ack, data) })
		case *http2.GoAwayFrame:
			last, code, debug := c.translateGoAway(f.LastStreamID), f.ErrCode, bytes.Clone(f.DebugData())
			c.toClient.queue(func(w *http2.Framer) error { return w.WriteGoAway(last, code, debug) })
		}
		if !frameBuffered(br) {
			c.toClient.kick()
		}
		c.toClient.waitSpace()
	}
}

// queueUpstreamBlock queues a response header block's frames as one item,
// so that nothing comes between them, and marks its stream done once the
// block is written if it ended the stream: the end of the last stream may
// let a draining connection close.
func (c *h2) queueUpstreamBlock(frames []func(*http2.Framer) error, st *h2stream, ends bool) {
	if len(frames) == 0 {
		return
	}
	frames = append([]func(*http2.Framer) error(nil), frames...)
	c.toClient.queue(func(w *http2.Framer) error {
		for _, write := range frames {
			if err := write(w); err != nil {
				return err
			}
		}
		if ends && st != nil {
			c.mu.Lock()
			st.upstreamDone = true
			c.cleanupLocked(st)
			c.mu.Unlock()
		}
		return nil
	})
}

func (c *h2) upstreamData(f *http2.DataFrame) {
	cid, st := c.clientID(f.StreamID)
	if cid == 0 {
		return // a stream the client no longer has
	}
	end := f.StreamEnded()
	data, pad := bytes.Clone(f.Data()), dataPadding(f)
	c.toClient.queueBytes(len(data), func(w *http2.Framer) error {
		var err error
		if pad != nil {
			err = w.WriteDataPadded(cid, end, data, pad)
		} else {
			err = w.WriteData(cid, end, data)
		}
		if err == nil && end && st != nil {
			c.mu.Lock()
			st.upstreamDone = true
			c.cleanupLocked(st)
			c.mu.Unlock()
		}
		return err
	})
}

// clientID maps an upstream stream ID to the client's; even (pushed)
// stream IDs are the same on both sides. 0 means none.
func (c *h2) clientID(uid uint32) (uint32, *h2stream) {
	if uid%2 == 0 {
		return uid, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.byUp[uid]; st != nil {
		return st.cid, st
	}
	return 0, nil
}

// translateGoAway maps the last stream the application processed to the
// client's numbering and marks the connection so that streams still held
// are refused rather than sent.
func (c *h2) translateGoAway(last uint32) uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.upGoAway = true
	var clientLast uint32
	for uid, st := range c.byUp {
		if uid <= last && st.cid > clientLast {
			clientLast = st.cid
		}
	}
	return clientLast
}

// sendGoAwayLocked queues our GOAWAY once draining, but never before the
// application's SETTINGS, which must be the first frame the client gets.
func (c *h2) sendGoAwayLocked() {
	if !c.ourGoAway || c.goAwaySent || !c.settingsIn {
		return
	}
	c.goAwaySent = true
	last := c.goAwayLast
	c.toClient.queue(func(w *http2.Framer) error { return w.WriteGoAway(last, http2.ErrCodeNo, nil) })
}

// cleanupLocked forgets a stream both sides have ended.
func (c *h2) cleanupLocked(st *h2stream) {
	if st.clientDone && st.upstreamDone {
		if c.streams[st.cid] == st {
			delete(c.streams, st.cid)
		}
		delete(c.byUp, st.uid)
		c.checkDrainedLocked()
	}
}

func (c *h2) checkDrainedLocked() {
	if c.ourGoAway && len(c.streams) == 0 {
		select {
		case <-c.drained:
		default:
			close(c.drained)
		}
	}
}

func (c *h2) stopTimers() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.streams {
		if st.timer != nil {
			st.timer.Stop()
		}
	}
}

// h2writer writes one direction with one Framer. Readers and timers queue
// items while they hold the stream table's lock, so that items are in
// sending order; then, without that lock, they kick: the first goroutine
// to kick writes what is queued, in order, and flushes once the queue is
// empty, while the others go on. Readers kick once their input holds no
// whole frame, so a burst goes out in one write.
type h2writer struct {
	bw   *bufio.Writer
	fr   *http2.Framer
	conn net.Conn // closed when a write fails
	p    *Proxy

	mu       sync.Mutex
	space    *sync.Cond // readers waiting for the queue to go down
	items    []func(*http2.Framer) error
	spare    []func(*http2.Framer) error
	queued   int  // bytes of DATA queued
	writing  bool // a goroutine is writing
	finished bool // no more items are taken
	failed   bool

	enc    *hpack.Encoder // request header blocks (toUp) or answers (toClient)
	encBuf bytes.Buffer
}

func newH2Writer(bw *bufio.Writer, conn net.Conn, p *Proxy) *h2writer {
	w := &h2writer{bw: bw, fr: http2.NewFramer(bw, nil), conn: conn, p: p}
	w.space = sync.NewCond(&w.mu)
	w.enc = hpack.NewEncoder(&w.encBuf)
	return w
}

func (w *h2writer) queue(item func(*http2.Framer) error) { w.queueBytes(0, item) }

func (w *h2writer) queueBytes(n int, item func(*http2.Framer) error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.finished || w.failed {
		return
	}
	w.items = append(w.items, item)
	w.queued += n
}

// queueFrom queues raw bytes (the client preface).
func (w *h2writer) queueFrom(b []byte) {
	b = bytes.Clone(b)
	w.queue(func(*http2.Framer) error { _, err := w.bw.Write(b); return err })
}

// kick writes what is queued unless another goroutine is writing.
func (w *h2writer) kick() {
	w.mu.Lock()
	if w.writing || w.failed {
		w.mu.Unlock()
		return
	}
	w.writing = true
	for {
		batch := w.items
		w.items, w.spare = w.spare[:0], nil
		w.queued = 0
		w.mu.Unlock()
		w.space.Broadcast()
		var err error
		for i, item := range batch {
			if err == nil {
				err = item(w.fr)
			}
			batch[i] = nil
		}
		w.mu.Lock()
		w.spare = batch[:0]
		if err == nil && len(w.items) == 0 {
			w.mu.Unlock()
			err = w.bw.Flush()
			w.mu.Lock()
		}
		if err != nil || len(w.items) == 0 {
			w.writing = false
			w.failed = w.failed || err != nil
			w.mu.Unlock()
			w.space.Broadcast() // for readers, and for stop
			if err != nil {
				// The peer is gone: its reader ends with the socket.
				w.conn.Close()
				if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
					w.p.Logger.Debug("http2 write", "err", err)
				}
			}
			return
		}
	}
}

// waitSpace blocks a reader while too much DATA is queued.
func (w *h2writer) waitSpace() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.queued > maxQueued && !w.failed {
		w.space.Wait()
	}
}

// finish writes what is queued, takes no more, and returns once it is
// written and flushed, also by a goroutine that was writing already: the
// frame that ended the last stream may be in its batch, and the
// connection closes next.
func (w *h2writer) finish() {
	w.kick()
	w.mu.Lock()
	w.finished = true
	w.mu.Unlock()
	w.kick() // what came meanwhile
	w.mu.Lock()
	for w.writing {
		w.space.Wait()
	}
	w.mu.Unlock()
}

// stop ends all writing, waiting for a write in progress: the buffers
// are about to go back to their pool.
func (w *h2writer) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failed = true
	for w.writing {
		w.space.Wait()
	}
}

// encode encodes a header block. Toward the application the dynamic
// table is used, within tableLimit; answers to the client use
// never-indexed fields, which leave the client's table as the
// application's encoder left it.
func (w *h2writer) encode(fields []hpack.HeaderField, tableLimit uint32, neverIndex bool) []byte {
	w.encBuf.Reset()
	if !neverIndex {
		w.enc.SetMaxDynamicTableSizeLimit(tableLimit)
	}
	for _, f := range fields {
		f.Sensitive = neverIndex
		_ = w.enc.WriteField(f)
	}
	return w.encBuf.Bytes()
}

// h2request gives the rule a request's header fields.
type h2request []hpack.HeaderField

func (f h2request) Method() string { v, _ := f.Header(":method"); return v }

func (f h2request) Path() string {
	p, _ := f.Header(":path")
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	return p
}

func (f h2request) Header(name string) (string, bool) {
	for _, hf := range f {
		if strings.EqualFold(hf.Name, name) {
			return hf.Value, true
		}
	}
	return "", false
}

func (f h2request) GRPC() bool {
	ct, _ := f.Header("content-type")
	return ct == "application/grpc" || strings.HasPrefix(ct, "application/grpc+") || strings.HasPrefix(ct, "application/grpc;")
}
