package node

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/faultline-dev/faultline/internal/testkit/proctest"
	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// TestSecondDaemonRefusesASteeredPort: two faultlined on one machine do
// not both take a port: the second is refused, naming the other's
// program, until the first's fault ends.
func TestSecondDaemonRefusesASteeredPort(t *testing.T) {
	nd := newNode(t)
	other := proctest.StartFaultlined(t, binDir)
	conn, err := grpc.NewClient("unix://"+other.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	api2 := pb.NewNodeClient(conn)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := proctest.Inject(ctx, nd.api, nd.httpRequest(time.Minute, &pb.HTTPFault{ErrorRate: 1, ErrorCode: 503}))
		done <- err
	}()
	nd.waitFaults(t, 1)
	_, err = proctest.Inject(context.Background(), api2, nd.httpRequest(time.Minute, &pb.HTTPFault{ErrorRate: 1, ErrorCode: 500}))
	if st := status.Convert(err); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "already steered by another process") {
		t.Fatalf("the second daemon on the same port: %v, want FailedPrecondition naming the other", err)
	}
	if code, _ := nd.get(t); code != 503 {
		t.Errorf("the first daemon's fault after the refusal: %d, want 503", code)
	}
	cancel()
	<-done
	nd.waitFaults(t, 0)

	// Once the first is over, the second may.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	go func() {
		_, err := proctest.Inject(ctx2, api2, nd.httpRequest(time.Minute, &pb.HTTPFault{ErrorRate: 1, ErrorCode: 500}))
		done <- err
	}()
	proctest.WaitFaults(t, api2, 1)
	if code, _ := nd.get(t); code != 500 {
		t.Errorf("the second daemon's fault: %d, want 500", code)
	}
	cancel2()
	<-done
}

// TestSIGTERMAfterFIFOCalls: calls naming a FIFO as netns (refused at once)
// pin nothing, so SIGTERM still ends faultlined within 5 s.
func TestSIGTERMAfterFIFOCalls(t *testing.T) {
	nd := newNode(t)
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := proctest.Inject(ctx, nd.api, &pb.InjectRequest{
			Target: &pb.Target{Kind: &pb.Target_NetnsPath{NetnsPath: fifo}}, Duration: nd.httpRequest(time.Minute, &pb.HTTPFault{}).GetDuration(),
			Fault: &pb.InjectRequest_Http{Http: &pb.HTTPFault{Port: 8080, ErrorRate: 1, ErrorCode: 503}},
		})
		cancel()
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("call %d with a FIFO: %v, want InvalidArgument", i, err)
		}
	}
	start := time.Now()
	if err := nd.daemon.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { _, err := nd.daemon.Process.Wait(); exited <- err }()
	select {
	case <-exited:
		t.Logf("faultlined ended %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("faultlined still running 5s after SIGTERM")
	}
	if _, err := os.Stat(nd.socket); err == nil {
		t.Errorf("faultlined left its socket %s", nd.socket)
	}
}
