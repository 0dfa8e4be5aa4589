package gateway

import (
	"context"
	"testing"
	"time"

	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// TestRevokeAll: in local mode faults on every node end; a node that
// fails is named, the others are still asked.
func TestRevokeAll(t *testing.T) {
	ft := newFakeTransport(t, "n1", "n2")
	s := &Server{Source: staticSource{target("a", "n1"), target("b", "n2"), target("c", "n2")}, Transport: ft}
	done := make(chan error, 1)
	go func() {
		_, err := s.InjectHTTP(context.Background(), httpRequest(time.Minute, map[string]string{"app": "web"}))
		done <- err
	}()
	for deadline := time.Now().Add(5 * time.Second); ft.nodes["n1"].runningCount()+ft.nodes["n2"].runningCount() < 3; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the faults did not start")
		}
	}
	resp, err := s.RevokeAll(context.Background(), &pb.RevokeAllRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetRevoked()) != 3 || len(resp.GetUnreachable()) != 1 || resp.GetUnreachable()[0] != "node gone: no faultlined on node gone" {
		t.Errorf("response %v", resp)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the inject call did not end after RevokeAll")
	}
	if n := ft.nodes["n1"].runningCount() + ft.nodes["n2"].runningCount(); n != 0 {
		t.Errorf("%d faults still running", n)
	}
}
