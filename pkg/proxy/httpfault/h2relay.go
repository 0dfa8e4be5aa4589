package httpfault

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2/hpack"
)

// Cleartext HTTP/2 (prior knowledge) is relayed frame by frame between the
// client's connection and the proxy's own connection to the application,
// one for one. Frames pass in batches, as they were read, so SETTINGS,
// PING, flow control, GOAWAY and message boundaries are the peers' own.
//
// The relay steps in on three things only:
//   - Request header blocks are HPACK-decoded (to decide on a fault) and
//     re-encoded toward the application, and client streams are renumbered
//     in the order they are sent upstream: a delayed stream is simply sent
//     later, with the next upstream stream ID.
//   - An injected error is written to the client by the relay: a gRPC
//     trailers-only response, or an HTTP status with a small body. Its
//     header block uses literal fields without indexing, so the client's
//     HPACK table, which belongs to the application's encoder, is untouched.
//   - DATA the application will never see (for an answered stream) is
//     credited back to the client with a connection WINDOW_UPDATE, and bytes
//     of injected bodies are taken out of the client's next connection
//     WINDOW_UPDATE, so both ends keep consistent flow-control windows.
//
// Response header blocks from the application pass untouched, so a
// response delay (DelayResponse) is not offered on HTTP/2: delays there are
// always spent before the request goes upstream.

const (
	frameData         = 0x0
	frameHeaders      = 0x1
	framePriority     = 0x2
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	framePushPromise  = 0x5
	frameGoAway       = 0x7
	frameWindowUpdate = 0x8
	frameContinuation = 0x9

	flagEndStream  = 0x1
	flagAck        = 0x1
	flagEndHeaders = 0x4
	flagPadded     = 0x8
	flagPriority   = 0x20

	errCodeNo            = 0x0
	errCodeProtocol      = 0x1
	errCodeRefusedStream = 0x7

	settingHeaderTableSize = 0x1

	// maxInjectedBody bounds an injected HTTP error body on HTTP/2, so it
	// fits any client's initial flow-control window.
	maxInjectedBody = 16 << 10
)

var errH2Protocol = errors.New("http2 protocol error")

type frameHeader struct {
	length uint32
	typ    uint8
	flags  uint8
	stream uint32
}

func (h frameHeader) append(b []byte) []byte {
	return append(b, byte(h.length>>16), byte(h.length>>8), byte(h.length), h.typ, h.flags,
		byte(h.stream>>24)&0x7f, byte(h.stream>>16), byte(h.stream>>8), byte(h.stream))
}

// readFrame reads one frame. The payload is valid until the next read from
// br, unless it was larger than br's buffer, in which case it was copied.
func readFrame(br *bufio.Reader) (frameHeader, []byte, error) {
	b, err := br.Peek(9)
	if err != nil {
		return frameHeader{}, nil, err
	}
	h := frameHeader{
		length: uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]),
		typ:    b[3],
		flags:  b[4],
		stream: binary.BigEndian.Uint32(b[5:9]) & 0x7fffffff,
	}
	_, _ = br.Discard(9)
	n := int(h.length)
	if n <= br.Size() {
		p, err := br.Peek(n)
		if err != nil {
			return h, nil, err
		}
		_, _ = br.Discard(n)
		return h, p, nil
	}
	p := make([]byte, n)
	_, err = io.ReadFull(br, p)
	return h, p, err
}

// side is one end of the relay: a writer shared by the relay's goroutines.
type side struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (s *side) writeFrame(h frameHeader, payload []byte) error {
	var hb [9]byte
	h.length = uint32(len(payload))
	if _, err := s.w.Write(h.append(hb[:0])); err != nil {
		return err
	}
	_, err := s.w.Write(payload)
	return err
}

type streamState int

const (
	streamHeld     streamState = iota // delayed: frames queue until release
	streamOpen                        // sent upstream
	streamAnswered                    // answered by the relay; the application never sees it
)

type queuedFrame struct {
	h       frameHeader
	payload []byte
	fields  []hpack.HeaderField // client trailers of a held stream
}

type h2stream struct {
	cid, uid     uint32
	state        streamState
	fields       []hpack.HeaderField
	endStream    bool // the client's HEADERS ended the request
	clientDone   bool
	upstreamDone bool
	queue        []queuedFrame
	timer        *time.Timer
}

type h2relay struct {
	p      *Proxy
	client *side // writes to the client
	up     *side // writes to the application

	dec    *hpack.Decoder
	fields []hpack.HeaderField
	enc    *hpack.Encoder // guarded by up.mu: encoding order is sending order
	encBuf bytes.Buffer

	upTableSize atomic.Uint32 // the application's SETTINGS_HEADER_TABLE_SIZE

	mu          sync.Mutex
	streams     map[uint32]*h2stream // by client stream ID
	byUp        map[uint32]*h2stream // by upstream stream ID
	maxClientID uint32
	nextUp      uint32
	upGoAway    bool // the application sent GOAWAY
	ourGoAway   bool // shutting down: the client gets (or got) our GOAWAY
	goAwaySent  bool
	settingsIn  bool   // the application's SETTINGS reached the client: frames may follow
	goAwayLast  uint32 // the last client stream we accept after ourGoAway
	injected    uint32 // connection DATA bytes we sent the client
	drained     chan struct{}
	ended       chan struct{} // closed when both directions have stopped
}

func newH2Relay(p *Proxy, client, up *bufio.Writer) *h2relay {
	r := &h2relay{
		p:       p,
		client:  &side{w: client},
		up:      &side{w: up},
		streams: map[uint32]*h2stream{},
		byUp:    map[uint32]*h2stream{},
		nextUp:  1,
		drained: make(chan struct{}),
		ended:   make(chan struct{}),
	}
	r.upTableSize.Store(4096)
	r.dec = hpack.NewDecoder(4096, func(f hpack.HeaderField) { r.fields = append(r.fields, f) })
	r.enc = hpack.NewEncoder(&r.encBuf)
	return r
}

// serveHTTP2 relays the connection until either side ends it.
func (c *conn) serveHTTP2() {
	if err := c.dialUp(); err != nil {
		c.p.upstreamErrors.Add(1)
		return // the client sees the connection close before any SETTINGS
	}
	r := newH2Relay(c.p, c.bw, c.upbw)
	c.upMu.Lock()
	c.relay = r
	if c.p.closing.Load() {
		c.drainHTTP2() // Shutdown may have passed this connection by
	}
	c.upMu.Unlock()
	// The preface goes first, as received.
	pre, _ := c.br.Peek(len(h2Preface))
	c.upbw.Write(pre)
	_, _ = c.br.Discard(len(h2Preface))

	done := make(chan struct{})
	go func() {
		defer close(done)
		err := r.relayUpstream(c.upbr)
		c.p.Logger.Debug("http2 upstream side ended", "err", err)
		c.c.Close()
	}()
	err := r.relayClient(c.br)
	c.p.Logger.Debug("http2 client side ended", "err", err)
	c.upMu.Lock()
	c.up.Close()
	c.upMu.Unlock()
	<-done
	r.stopTimers()
	c.upMu.Lock()
	c.relay = nil // Shutdown no longer drains it
	c.upMu.Unlock()
	close(r.ended)
	c.drainers.Wait()
}

// relayClient reads the client's frames and relays them upstream.
func (r *h2relay) relayClient(br *bufio.Reader) error {
	for {
		h, payload, err := readFrame(br)
		if err != nil {
			return err
		}
		if h.typ == frameHeaders {
			block, err := r.headerBlock(br, h, payload)
			if err != nil {
				return err
			}
			if err := r.clientHeaders(h, block); err != nil {
				return err
			}
		} else if err := r.clientFrame(h, payload); err != nil {
			return err
		}
		if br.Buffered() < 9 {
			if err := r.flush(r.up); err != nil {
				return err
			}
		}
	}
}

func (r *h2relay) flush(s *side) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Flush()
}

// headerBlock assembles a header block from a HEADERS frame and its
// CONTINUATION frames, without padding and priority fields.
func (r *h2relay) headerBlock(br *bufio.Reader, h frameHeader, payload []byte) ([]byte, error) {
	if h.flags&flagPadded != 0 {
		if len(payload) < 1 || int(payload[0]) >= len(payload) {
			return nil, errH2Protocol
		}
		payload = payload[1 : len(payload)-int(payload[0])]
	}
	if h.flags&flagPriority != 0 {
		if len(payload) < 5 {
			return nil, errH2Protocol
		}
		payload = payload[5:]
	}
	if h.flags&flagEndHeaders != 0 {
		return payload, nil
	}
	block := append([]byte(nil), payload...)
	for {
		ch, cp, err := readFrame(br)
		if err != nil {
			return nil, err
		}
		if ch.typ != frameContinuation || ch.stream != h.stream {
			return nil, errH2Protocol
		}
		block = append(block, cp...)
		if ch.flags&flagEndHeaders != 0 {
			return block, nil
		}
	}
}

// decode decodes a client header block; every block is decoded, in order,
// to keep the decoder's table in step with the client's encoder.
func (r *h2relay) decode(block []byte) ([]hpack.HeaderField, error) {
	r.fields = nil
	r.dec.SetAllowedMaxDynamicTableSize(max(4096, r.upTableSize.Load()))
	if _, err := r.dec.Write(block); err != nil {
		return nil, err
	}
	if err := r.dec.Close(); err != nil {
		return nil, err
	}
	return r.fields, nil
}

func (r *h2relay) clientHeaders(h frameHeader, block []byte) error {
	fields, err := r.decode(block)
	if err != nil {
		return err
	}
	end := h.flags&flagEndStream != 0
	r.mu.Lock()
	defer r.mu.Unlock()
	if h.stream%2 == 1 && h.stream > r.maxClientID {
		r.maxClientID = h.stream
		return r.newStreamLocked(h.stream, fields, end)
	}
	st := r.streams[h.stream]
	if st == nil {
		return nil // a closed stream: drop
	}
	st.clientDone = st.clientDone || end
	switch st.state {
	case streamHeld:
		st.queue = append(st.queue, queuedFrame{h: h, fields: fields})
	case streamOpen:
		err = r.sendHeadersLocked(st.uid, fields, end)
		r.cleanupLocked(st)
	}
	return err
}

// newStreamLocked decides the fate of a new request stream.
func (r *h2relay) newStreamLocked(cid uint32, fields []hpack.HeaderField, end bool) error {
	st := &h2stream{cid: cid, fields: fields, endStream: end, clientDone: end}
	r.streams[cid] = st
	if r.ourGoAway && cid > r.goAwayLast || r.upGoAway {
		return r.refuseLocked(st)
	}
	req := h2fields(fields)
	grpcCall := isGRPCContentType(req.get("content-type"))
	d := r.p.decide(req, grpcCall)
	switch {
	case d.fail:
		st.state = streamHeld // until answered: its frames are dropped then
		st.timer = time.AfterFunc(d.delay, func() { r.answer(st, grpcCall) })
		return nil
	case d.delay > 0:
		st.state = streamHeld
		st.timer = time.AfterFunc(d.delay, func() { r.release(st) })
		return nil
	}
	return r.openLocked(st)
}

// openLocked sends a stream's request headers upstream, then what queued.
func (r *h2relay) openLocked(st *h2stream) error {
	st.state = streamOpen
	st.uid = r.nextUp
	r.nextUp += 2
	r.byUp[st.uid] = st
	if err := r.sendHeadersLocked(st.uid, st.fields, st.endStream); err != nil {
		return err
	}
	st.fields = nil
	for _, q := range st.queue {
		var err error
		if q.fields != nil {
			err = r.sendHeadersLocked(st.uid, q.fields, q.h.flags&flagEndStream != 0)
		} else {
			err = r.upFrameLocked(q.h, st.uid, q.payload)
		}
		if err != nil {
			return err
		}
	}
	st.queue = nil
	r.cleanupLocked(st)
	return nil
}

// release opens a delayed stream when its delay has passed.
func (r *h2relay) release(st *h2stream) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st.state != streamHeld || r.streams[st.cid] != st {
		return
	}
	var err error
	if r.upGoAway {
		err = r.refuseLocked(st)
	} else {
		err = r.openLocked(st)
	}
	if err == nil {
		err = r.flush(r.up)
	}
	if err != nil {
		r.p.Logger.Debug("release delayed http2 stream", "err", err)
	}
}

func (r *h2relay) upFrameLocked(h frameHeader, uid uint32, payload []byte) error {
	r.up.mu.Lock()
	defer r.up.mu.Unlock()
	h.stream = uid
	return r.up.writeFrame(h, payload)
}

// sendHeadersLocked encodes fields for the application and writes them as
// HEADERS and CONTINUATION frames of at most 16 KiB (the minimum frame
// size every peer accepts).
func (r *h2relay) sendHeadersLocked(uid uint32, fields []hpack.HeaderField, end bool) error {
	r.up.mu.Lock()
	defer r.up.mu.Unlock()
	r.encBuf.Reset()
	r.enc.SetMaxDynamicTableSizeLimit(min(4096, r.upTableSize.Load()))
	for _, f := range fields {
		if err := r.enc.WriteField(f); err != nil {
			return err
		}
	}
	return writeHeaderBlock(r.up, uid, r.encBuf.Bytes(), end)
}

func writeHeaderBlock(s *side, sid uint32, block []byte, end bool) error {
	const maxFrag = 16 << 10
	typ := uint8(frameHeaders)
	for first := true; first || len(block) > 0; first = false {
		frag := block[:min(len(block), maxFrag)]
		block = block[len(frag):]
		var flags uint8
		if first && end {
			flags |= flagEndStream
		}
		if len(block) == 0 {
			flags |= flagEndHeaders
		}
		if err := s.writeFrame(frameHeader{typ: typ, flags: flags, stream: sid}, frag); err != nil {
			return err
		}
		typ = frameContinuation
	}
	return nil
}

// answer writes the injected error for a stream whose delay has passed.
func (r *h2relay) answer(st *h2stream, grpcCall bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.streams[st.cid] != st || st.state != streamHeld {
		return
	}
	st.state = streamAnswered
	st.queue = nil
	var fields []hpack.HeaderField
	var body []byte
	if grpcCall && r.p.GRPC != nil {
		g := r.p.GRPC
		fields = []hpack.HeaderField{{Name: ":status", Value: "200"}, {Name: "content-type", Value: "application/grpc"},
			{Name: "grpc-status", Value: strconv.Itoa(g.StatusCode)}}
		if g.StatusMessage != "" {
			fields = append(fields, hpack.HeaderField{Name: "grpc-message", Value: percentEncode(g.StatusMessage)})
		}
	} else {
		f := r.p.Fault
		body = f.ErrorBody[:min(len(f.ErrorBody), maxInjectedBody)]
		fields = []hpack.HeaderField{{Name: ":status", Value: strconv.Itoa(f.ErrorCode)}}
		for k, vs := range f.ErrorHeaders {
			for _, v := range vs {
				fields = append(fields, hpack.HeaderField{Name: strings.ToLower(k), Value: v})
			}
		}
		if len(body) > 0 && f.ErrorHeaders.Get("Content-Type") == "" {
			fields = append(fields, hpack.HeaderField{Name: "content-type", Value: "text/plain; charset=utf-8"})
		}
		fields = append(fields, hpack.HeaderField{Name: "content-length", Value: strconv.Itoa(len(body))})
	}
	err := r.writeClientLocked(func() error {
		if err := writeHeaderBlock(r.client, st.cid, literalBlock(fields), len(body) == 0); err != nil {
			return err
		}
		if len(body) > 0 {
			r.injected += uint32(len(body))
			if err := r.client.writeFrame(frameHeader{typ: frameData, flags: flagEndStream, stream: st.cid}, body); err != nil {
				return err
			}
		}
		if !st.clientDone {
			// Tell the client to stop sending the request body.
			return r.client.writeFrame(frameHeader{typ: frameRSTStream, stream: st.cid}, u32(errCodeNo))
		}
		return nil
	})
	delete(r.streams, st.cid)
	r.checkDrainedLocked()
	if err != nil {
		r.p.Logger.Debug("answer http2 stream", "err", err)
	}
}

// refuseLocked resets a stream the application will not take, so the
// client may retry it elsewhere.
func (r *h2relay) refuseLocked(st *h2stream) error {
	st.state = streamAnswered
	delete(r.streams, st.cid)
	r.checkDrainedLocked()
	return r.writeClientLocked(func() error {
		return r.client.writeFrame(frameHeader{typ: frameRSTStream, stream: st.cid}, u32(errCodeRefusedStream))
	})
}

func (r *h2relay) writeClientLocked(write func() error) error {
	r.client.mu.Lock()
	defer r.client.mu.Unlock()
	if err := write(); err != nil {
		return err
	}
	return r.client.w.Flush()
}

// clientFrame relays a client frame other than HEADERS.
func (r *h2relay) clientFrame(h frameHeader, payload []byte) error {
	if h.stream == 0 {
		if h.typ == frameWindowUpdate && len(payload) == 4 {
			payload = r.credit(payload)
			if payload == nil {
				return nil
			}
		}
		r.up.mu.Lock()
		defer r.up.mu.Unlock()
		return r.up.writeFrame(h, payload)
	}
	switch h.typ {
	case frameContinuation, framePushPromise:
		return errH2Protocol
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.streams[h.stream]
	if h.typ == frameData && h.flags&flagEndStream != 0 && st != nil {
		st.clientDone = true
	}
	switch {
	case st == nil || st.state == streamAnswered:
		if h.typ == frameData && len(payload) > 0 {
			// Never reaching the application: give the client its
			// connection window back.
			return r.writeClientLocked(func() error {
				return r.client.writeFrame(frameHeader{typ: frameWindowUpdate}, u32(uint32(len(payload))))
			})
		}
		return nil
	case st.state == streamHeld:
		st.queue = append(st.queue, queuedFrame{h: h, payload: append([]byte(nil), payload...)})
		return nil
	}
	if h.typ == frameRSTStream {
		delete(r.streams, st.cid)
		delete(r.byUp, st.uid)
		r.checkDrainedLocked()
	}
	err := r.upFrameLocked(h, st.uid, payload)
	r.cleanupLocked(st)
	return err
}

// credit takes the bytes of injected bodies out of a client
// connection WINDOW_UPDATE; the application never sent them, so it must
// not get the credit. It returns nil when nothing is left to forward.
func (r *h2relay) credit(payload []byte) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	inc := binary.BigEndian.Uint32(payload) & 0x7fffffff
	take := min(inc, r.injected)
	r.injected -= take
	if inc == take {
		return nil
	}
	return u32(inc - take)
}

// relayUpstream reads the application's frames and relays them to the
// client, renumbering streams back.
func (r *h2relay) relayUpstream(br *bufio.Reader) error {
	for {
		h, payload, err := readFrame(br)
		if err != nil {
			return err
		}
		switch {
		case h.typ == frameHeaders || h.typ == framePushPromise:
			err = r.upstreamHeaders(br, h, payload)
		case h.stream == 0:
			err = r.upstreamConnFrame(h, payload)
		default:
			err = r.upstreamStreamFrame(h, payload)
		}
		if err != nil {
			return err
		}
		if br.Buffered() < 9 {
			if err := r.flush(r.client); err != nil {
				return err
			}
		}
	}
}

// clientID maps an upstream stream ID to the client's; even (pushed)
// stream IDs are the same on both sides.
func (r *h2relay) clientIDLocked(uid uint32) (uint32, *h2stream) {
	if uid%2 == 0 {
		return uid, nil
	}
	if st := r.byUp[uid]; st != nil {
		return st.cid, st
	}
	return 0, nil
}

// upstreamHeaders relays a HEADERS or PUSH_PROMISE frame and its
// CONTINUATION frames as they are (the block belongs to the client's
// decoder), holding the client writer so nothing comes between them.
func (r *h2relay) upstreamHeaders(br *bufio.Reader, h frameHeader, payload []byte) error {
	r.mu.Lock()
	cid, st := r.clientIDLocked(h.stream)
	r.mu.Unlock()
	if cid == 0 {
		cid = h.stream // unknown stream: the client will answer as the protocol says
	}
	ends := st != nil && h.typ == frameHeaders && h.flags&flagEndStream != 0
	if err := r.writeHeaderFrames(br, h, cid, payload); err != nil {
		return err
	}
	if ends {
		// Only once the frame is written: the end of the last stream may
		// let a draining connection close.
		r.mu.Lock()
		st.upstreamDone = true
		r.cleanupLocked(st)
		r.mu.Unlock()
	}
	return nil
}

// writeHeaderFrames writes a header block's frames to the client, holding
// the client writer so nothing comes between them.
func (r *h2relay) writeHeaderFrames(br *bufio.Reader, h frameHeader, cid uint32, payload []byte) error {
	r.client.mu.Lock()
	defer r.client.mu.Unlock()
	h.stream = cid
	if err := r.client.writeFrame(h, payload); err != nil {
		return err
	}
	for h.flags&flagEndHeaders == 0 {
		ch, cp, err := readFrame(br)
		if err != nil {
			return err
		}
		if ch.typ != frameContinuation {
			return errH2Protocol
		}
		ch.stream = cid
		if err := r.client.writeFrame(ch, cp); err != nil {
			return err
		}
		h.flags = ch.flags
	}
	return nil
}

func (r *h2relay) upstreamConnFrame(h frameHeader, payload []byte) error {
	switch h.typ {
	case frameSettings:
		if h.flags&flagAck == 0 {
			for p := payload; len(p) >= 6; p = p[6:] {
				if binary.BigEndian.Uint16(p) == settingHeaderTableSize {
					r.upTableSize.Store(binary.BigEndian.Uint32(p[2:]))
				}
			}
		}
	case frameGoAway:
		if len(payload) >= 8 {
			payload = r.translateGoAway(payload)
		}
	}
	r.client.mu.Lock()
	err := r.client.writeFrame(h, payload)
	r.client.mu.Unlock()
	if err == nil && h.typ == frameSettings && h.flags&flagAck == 0 {
		r.mu.Lock()
		r.settingsIn = true
		err = r.sendGoAwayLocked()
		r.mu.Unlock()
	}
	return err
}

// sendGoAwayLocked sends our GOAWAY once shutting down, but never before
// the application's SETTINGS, which must be the first frame the client gets.
func (r *h2relay) sendGoAwayLocked() error {
	if !r.ourGoAway || r.goAwaySent || !r.settingsIn {
		return nil
	}
	r.goAwaySent = true
	payload := append(u32(r.goAwayLast), u32(errCodeNo)...)
	return r.writeClientLocked(func() error {
		return r.client.writeFrame(frameHeader{typ: frameGoAway}, payload)
	})
}

// translateGoAway maps the last stream the application processed to the
// client's numbering and marks the connection so that streams still held
// are refused rather than sent.
func (r *h2relay) translateGoAway(payload []byte) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.upGoAway = true
	last := binary.BigEndian.Uint32(payload) & 0x7fffffff
	var clientLast uint32
	for uid, st := range r.byUp {
		if uid <= last && st.cid > clientLast {
			clientLast = st.cid
		}
	}
	out := append([]byte(nil), payload...)
	binary.BigEndian.PutUint32(out, clientLast)
	return out
}

func (r *h2relay) upstreamStreamFrame(h frameHeader, payload []byte) error {
	r.mu.Lock()
	cid, st := r.clientIDLocked(h.stream)
	r.mu.Unlock()
	if cid == 0 {
		return nil // a stream the client no longer has
	}
	r.client.mu.Lock()
	h2 := h
	h2.stream = cid
	err := r.client.writeFrame(h2, payload)
	r.client.mu.Unlock()
	if err != nil || st == nil {
		return err
	}
	// Stream state changes only once the frame is written (see
	// upstreamHeaders).
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case h.typ == frameRSTStream:
		delete(r.streams, st.cid)
		delete(r.byUp, st.uid)
		r.checkDrainedLocked()
	case h.typ == frameData && h.flags&flagEndStream != 0:
		st.upstreamDone = true
		r.cleanupLocked(st)
	}
	return nil
}

// cleanupLocked forgets a stream both sides have ended.
func (r *h2relay) cleanupLocked(st *h2stream) {
	if st.clientDone && st.upstreamDone {
		delete(r.streams, st.cid)
		delete(r.byUp, st.uid)
		r.checkDrainedLocked()
	}
}

// shutdown starts a graceful end: the client gets a GOAWAY naming the last
// stream it opened, held streams go upstream at once (the fault is over),
// and the relay reports drained when no stream is left.
func (r *h2relay) shutdown() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ourGoAway {
		return
	}
	r.ourGoAway = true
	r.goAwayLast = r.maxClientID
	for _, st := range r.streams {
		if st.state == streamHeld && st.timer != nil && st.timer.Stop() {
			// Its fate was decided under the fault; an error stays an
			// error, a delay ends now.
			st.timer.Reset(0)
		}
	}
	_ = r.sendGoAwayLocked()
	r.checkDrainedLocked()
}

func (r *h2relay) checkDrainedLocked() {
	if r.ourGoAway && len(r.streams) == 0 {
		select {
		case <-r.drained:
		default:
			close(r.drained)
		}
	}
}

func (r *h2relay) stopTimers() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, st := range r.streams {
		if st.timer != nil {
			st.timer.Stop()
		}
	}
}

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// literalBlock encodes fields as literal header fields without indexing
// and without Huffman coding (RFC 7541 §6.2.2): the receiver's dynamic
// table is neither used nor changed.
func literalBlock(fields []hpack.HeaderField) []byte {
	var b []byte
	for _, f := range fields {
		b = append(b, 0)
		b = appendHpackString(b, f.Name)
		b = appendHpackString(b, f.Value)
	}
	return b
}

func appendHpackString(b []byte, s string) []byte {
	// A 7-bit prefix integer (RFC 7541 §5.1), H bit clear.
	n := uint64(len(s))
	if n < 127 {
		b = append(b, byte(n))
	} else {
		b = append(b, 127)
		n -= 127
		for n >= 128 {
			b = append(b, byte(n%128+128))
			n /= 128
		}
		b = append(b, byte(n))
	}
	return append(b, s...)
}

// h2fields gives the decision a request's header fields.
type h2fields []hpack.HeaderField

func (f h2fields) get(name string) string {
	v, _ := f.Header(name)
	return v
}

func (f h2fields) Method() string { return f.get(":method") }

func (f h2fields) Path() string {
	p := f.get(":path")
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	return p
}

func (f h2fields) Header(name string) (string, bool) {
	for _, hf := range f {
		if strings.EqualFold(hf.Name, name) {
			return hf.Value, true
		}
	}
	return "", false
}

func isGRPCContentType(ct string) bool {
	return ct == "application/grpc" || strings.HasPrefix(ct, "application/grpc+") || strings.HasPrefix(ct, "application/grpc;")
}
