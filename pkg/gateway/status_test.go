package gateway

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// waitRunning waits until the fake nodes run n faults in all.
func waitRunning(t *testing.T, ft *fakeTransport, n int) {
	t.Helper()
	for range 500 {
		sum := 0
		for _, node := range ft.nodes {
			sum += node.runningCount()
		}
		if sum == n {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("the nodes never ran %d faults", n)
}

func TestStatusEveryNodeAndATargetSet(t *testing.T) {
	ft := newFakeTransport(t, "n1", "n2")
	web, db := map[string]string{"app": "web"}, map[string]string{"app": "db"}
	dbTarget := target("d", "n2")
	dbTarget.Labels = db
	s := &Server{Source: staticSource{target("a", "n1"), target("b", "n2"), dbTarget}, Transport: ft}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 2)
	for _, labels := range []map[string]string{web, db} {
		go func() { _, err := s.InjectHTTP(ctx, httpRequest(time.Minute, labels)); done <- err }()
	}
	waitRunning(t, ft, 3)

	all, err := s.Status(context.Background(), &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range all.GetFaults() {
		got = append(got, f.GetTarget().GetNode()+":"+f.GetFault().GetTarget().GetNetnsPath())
	}
	if strings.Join(got, " ") != "n1:a n2:b n2:d" || all.GetTotal().GetRequests() != 3 {
		t.Errorf("every fault: %v, total %v", got, all.GetTotal())
	}
	if len(all.GetUnreachable()) != 1 || !strings.HasPrefix(all.GetUnreachable()[0], "node gone: no faultlined on node gone") {
		t.Errorf("unreachable %q, want node gone named", all.GetUnreachable())
	}

	// A target set: only its targets' faults, with their names.
	some, err := s.Status(context.Background(), &pb.StatusRequest{Targets: httpRequest(time.Minute, db).GetTargets()})
	if err != nil {
		t.Fatal(err)
	}
	if len(some.GetFaults()) != 1 || some.GetFaults()[0].GetTarget().GetName() != "d" || some.GetFaults()[0].GetTarget().GetNamespace() != "shop" || len(some.GetUnreachable()) != 0 {
		t.Errorf("the db selector's faults: %v", some)
	}
	cancel()
	<-done
	<-done
}

func TestStatusNoNodeAnswers(t *testing.T) {
	s := &Server{Source: staticSource{}, Transport: newFakeTransport(t)}
	_, err := s.Status(context.Background(), &pb.StatusRequest{})
	if st := grpcStatus(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "no faultlined answered: node gone") {
		t.Errorf("got %v, want Unavailable naming the node", err)
	}
	_, err = s.Status(context.Background(), &pb.StatusRequest{Targets: httpRequest(time.Minute, map[string]string{"app": "none"}).GetTargets()})
	if grpcStatus(err).Code() != codes.NotFound {
		t.Errorf("a selector matching nothing: %v, want NotFound", err)
	}
}
