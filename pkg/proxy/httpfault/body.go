package httpfault

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
)

// The copiers below move message bodies from a bufio.Reader to a
// bufio.Writer byte for byte, stopping exactly where the message ends so a
// pipelined next message is left in the reader. They flush the writer
// whenever they are about to wait for more input, so a streamed body (SSE,
// long polling) reaches the other side as soon as it is written, while a
// body that arrives at once goes out in as few writes as possible.

// waitInput flushes dst if src has nothing buffered, then waits for input.
func waitInput(dst *bufio.Writer, src *bufio.Reader) error {
	if src.Buffered() > 0 {
		return nil
	}
	if err := dst.Flush(); err != nil {
		return err
	}
	_, err := src.Peek(1)
	return err
}

// copyN copies exactly n bytes.
func copyN(dst *bufio.Writer, src *bufio.Reader, n int64) error {
	for n > 0 {
		if err := waitInput(dst, src); err != nil {
			if errors.Is(err, io.EOF) {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		k := int(min(int64(src.Buffered()), n))
		b, _ := src.Peek(k)
		if _, err := dst.Write(b); err != nil {
			return err
		}
		_, _ = src.Discard(k)
		n -= int64(k)
	}
	return nil
}

// copyUntilEOF copies until src ends.
func copyUntilEOF(dst *bufio.Writer, src *bufio.Reader) error {
	for {
		if err := waitInput(dst, src); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		b, _ := src.Peek(src.Buffered())
		if _, err := dst.Write(b); err != nil {
			return err
		}
		_, _ = src.Discard(len(b))
	}
}

var errBadChunk = errors.New("malformed chunked body")

// copyLine copies one line, ending in LF, and returns it (valid until the
// next read of src).
func copyLine(dst *bufio.Writer, src *bufio.Reader) ([]byte, error) {
	if buf, _ := src.Peek(src.Buffered()); bytes.IndexByte(buf, '\n') < 0 {
		if err := dst.Flush(); err != nil {
			return nil, err
		}
	}
	line, err := src.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	_, err = dst.Write(line)
	return line, err
}

// copyChunked copies a chunked body, chunk extensions and trailers included.
func copyChunked(dst *bufio.Writer, src *bufio.Reader) error {
	for {
		line, err := copyLine(dst, src)
		if err != nil {
			return err
		}
		size, err := parseChunkSize(line)
		if err != nil {
			return err
		}
		if size == 0 {
			break
		}
		if err := copyN(dst, src, size); err != nil {
			return err
		}
		if line, err = copyLine(dst, src); err != nil {
			return err
		}
		if len(trimCR(line[:len(line)-1])) != 0 {
			return errBadChunk
		}
	}
	// Trailer section, ended by an empty line.
	for {
		line, err := copyLine(dst, src)
		if err != nil {
			return err
		}
		if len(trimCR(line[:len(line)-1])) == 0 {
			return nil
		}
	}
}

func parseChunkSize(line []byte) (int64, error) {
	line = trimCR(line[:len(line)-1])
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	line = bytes.TrimSpace(line)
	if len(line) == 0 || len(line) > 15 {
		return 0, errBadChunk
	}
	n, err := strconv.ParseInt(string(line), 16, 64)
	if err != nil || n < 0 {
		return 0, errBadChunk
	}
	return n, nil
}

// copyRequestBody copies a request body with the given framing.
func copyRequestBody(dst *bufio.Writer, src *bufio.Reader, f framing) error {
	switch {
	case f.chunked:
		return copyChunked(dst, src)
	case f.contentLength > 0:
		return copyN(dst, src, f.contentLength)
	}
	return nil
}

// discardWriter is a bufio.Writer that drops everything, for bodies of
// requests answered with an injected error.
func discardWriter() *bufio.Writer { return bufio.NewWriterSize(io.Discard, 4096) }
