package netfault_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/faultline-dev/faultline/internal/testkit/netnstest"
	"github.com/faultline-dev/faultline/pkg/netfault"
)

// udpLoss sends n numbered datagrams from client to pod:port and returns
// how many distinct ones the pod's server received.
// waitUDPPath waits until a datagram from client reaches pod (a new
// bridge may take a moment on a loaded machine), at most 10 s.
func waitUDPPath(t *testing.T, pod, client *netnstest.Host, port int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if udpLoss(t, pod, client, port, 1) == 1 {
			return
		}
	}
	t.Fatal("no UDP path from client to pod within 10s")
}

func udpLoss(t *testing.T, pod, client *netnstest.Host, port, n int) int {
	t.Helper()
	var pc net.PacketConn
	if err := pod.NS.Do(func() error {
		var err error
		pc, err = net.ListenPacket("udp4", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc.(*net.UDPConn).SetReadBuffer(8 << 20)
	got := make(chan int)
	go func() {
		seen := map[uint32]bool{}
		buf := make([]byte, 64)
		for {
			pc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			k, _, err := pc.ReadFrom(buf)
			if err != nil {
				got <- len(seen)
				return
			}
			if k >= 4 {
				seen[binary.BigEndian.Uint32(buf)] = true
			}
		}
	}()
	c, err := client.Dial()(context.Background(), "udp4", netip.AddrPortFrom(pod.Addr, uint16(port)).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := make([]byte, 16)
	for i := range n {
		binary.BigEndian.PutUint32(msg, uint32(i))
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if i%50 == 49 {
			time.Sleep(time.Millisecond) // bounded rate: no loss in socket buffers
		}
	}
	return <-got
}

func TestUDPDropRate(t *testing.T) {
	n := netnstest.NewNet(t)
	pod, client := n.AddHost("pod"), n.AddHost("client")
	const sent = 6000
	waitUDPPath(t, pod, client, 7002)
	if got := udpLoss(t, pod, client, 7001, sent); got != sent {
		t.Fatalf("without a fault %d of %d datagrams arrived: the test itself loses packets", got, sent)
	}
	for _, rate := range []float64{0.1, 0.5} {
		f, err := netfault.Attach(pod.NS, netfault.Options{Port: 7000, Protocol: netfault.ProtocolUDP, DropRate: rate})
		if err != nil {
			t.Fatalf("%+v", err)
		}
		got := udpLoss(t, pod, client, 7000, sent)
		st, err := f.Stats()
		if err != nil {
			t.Fatal(err)
		}
		loss := float64(sent-got) / sent
		if math.Abs(loss-rate) > 0.03 {
			t.Errorf("rate %.1f: lost %.3f of %d datagrams", rate, loss, sent)
		}
		if st.PacketsSeen != sent || int(st.PacketsDropped) != sent-got {
			t.Errorf("rate %.1f: counters %+v, want %d seen and %d dropped", rate, st, sent, sent-got)
		}
		t.Logf("rate %.1f: lost %.4f (%d of %d), counters %+v", rate, loss, sent-got, sent, st)
		// Other ports pass while the fault runs.
		if got := udpLoss(t, pod, client, 7001, 500); got != 500 {
			t.Errorf("other port lost %d datagrams", 500-got)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func tcpServer(t *testing.T, h *netnstest.Host, port int) {
	ln := h.Listen(t, "tcp", fmt.Sprintf(":%d", port))
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
}

func dial(client *netnstest.Host, pod *netnstest.Host, port int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := client.Dial()(ctx, "tcp", netip.AddrPortFrom(pod.Addr, uint16(port)).String())
	if err == nil {
		c.Close()
	}
	return err
}

func TestTCPDropAllTimesOut(t *testing.T) {
	n := netnstest.NewNet(t)
	pod, client := n.AddHost("pod"), n.AddHost("client")
	tcpServer(t, pod, 7000)
	tcpServer(t, pod, 7002)
	f, err := netfault.Attach(pod.NS, netfault.Options{Port: 7000, Protocol: netfault.ProtocolTCP, DropRate: 1})
	if err != nil {
		t.Fatal(err)
	}
	progs := f.ProgramIDs()
	err = dial(client, pod, 7000, time.Second)
	if !isTimeout(err) {
		t.Errorf("dial to the dropped port: %v, want a timeout", err)
	}
	if err := dial(client, pod, 7002, time.Second); err != nil {
		t.Errorf("other port: %v", err)
	}
	f.Close()
	if err := dial(client, pod, 7000, time.Second); err != nil {
		t.Errorf("after Close: %v", err)
	}
	if live := netnstest.LivePrograms(t, progs); len(live) != 0 {
		t.Errorf("programs left after Close: %v", live)
	}
}

func TestResetRate(t *testing.T) {
	n := netnstest.NewNet(t)
	pod, client := n.AddHost("pod"), n.AddHost("client")
	tcpServer(t, pod, 7000)
	f, err := netfault.Attach(pod.NS, netfault.Options{Port: 7000, Protocol: netfault.ProtocolTCP, ResetRate: 1})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := dial(client, pod, 7000, 2*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("resetRate 1: %v, want connection refused", err)
	}
	if took := time.Since(start); took > 200*time.Millisecond {
		t.Errorf("refusal took %s, want at once", took)
	}
	f.Close()
	if f, err = netfault.Attach(pod.NS, netfault.Options{Port: 7000, Protocol: netfault.ProtocolTCP, ResetRate: 0.5}); err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const total = 400
	refused := 0
	for range total {
		if err := dial(client, pod, 7000, 2*time.Second); errors.Is(err, syscall.ECONNREFUSED) {
			refused++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	sigma := math.Sqrt(total * 0.25)
	if math.Abs(float64(refused)-total/2) > 4*sigma {
		t.Errorf("refused %d of %d at rate 0.5", refused, total)
	}
	st, _ := f.Stats()
	// The counters count lookups: a retransmitted SYN is looked up again.
	if st.ConnectionsRefused < uint64(refused) || st.ConnectionsRefused > uint64(refused+2) ||
		st.ConnectionsSeen < total || st.ConnectionsSeen > total+4 {
		t.Errorf("counters %+v, want about %d seen and %d refused", st, total, refused)
	}
	t.Logf("refused %d of %d; counters %+v", refused, total, st)
}

// isTimeout reports a timed-out dial, whichever deadline fired first.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
