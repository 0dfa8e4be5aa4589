package gateway

import (
	"context"
	"errors"
	"testing"
	"time"

	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

type fakeObjects struct {
	deleted []string
	err     error
}

func (f *fakeObjects) DeleteAll(context.Context) ([]string, error) { return f.deleted, f.err }

// TestRevokeAll: faults on every node end, and the Fault objects are
// deleted; an API server that fails is named, the nodes are still asked.
func TestRevokeAll(t *testing.T) {
	ft := newFakeTransport(t, "n1", "n2")
	s := &Server{Source: staticSource{target("a", "n1"), target("b", "n2"), target("c", "n2")}, Transport: ft,
		Objects: &fakeObjects{deleted: []string{"shop/catalog-down"}, err: errors.New("forbidden in namespace other")}}
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
	if len(resp.GetRevoked()) != 3 || len(resp.GetFaultsDeleted()) != 1 || len(resp.GetUnreachable()) != 2 || resp.GetUnreachable()[0] != "Fault objects: forbidden in namespace other" || resp.GetUnreachable()[1] != "node gone: no faultlined on node gone" {
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
