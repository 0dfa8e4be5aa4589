package gateway

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/containerd/errdefs"

	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// RevokeAll ends every fault. In Kubernetes mode it deletes every Fault
// object, and each node ends the faults of the deleted ones; in local mode
// it revokes every fault of every node, in parallel.
func (s *Server) RevokeAll(ctx context.Context, _ *pb.RevokeAllRequest) (*pb.RevokeAllResponse, error) {
	resp := &pb.RevokeAllResponse{}
	if s.Objects != nil {
		deleted, err := s.Objects.DeleteAll(ctx)
		if err != nil && len(deleted) == 0 {
			return nil, err
		}
		resp.FaultsDeleted = deleted
		if err != nil {
			resp.Unreachable = append(resp.Unreachable, "Fault objects: "+errorMessage(err))
		}
		return resp, nil
	}
	nodes, err := s.Transport.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, node := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			revoked, err := s.revokeNode(ctx, node)
			mu.Lock()
			defer mu.Unlock()
			resp.Revoked = append(resp.Revoked, revoked...)
			if err != nil {
				resp.Unreachable = append(resp.Unreachable, fmt.Sprintf("node %s: %s", node, errorMessage(err)))
			}
		}()
	}
	wg.Wait()
	if len(nodes) > 0 && len(resp.Unreachable) >= len(nodes) {
		return nil, fmt.Errorf("%w: nothing answered: %s", errdefs.ErrUnavailable, strings.Join(resp.Unreachable, "; "))
	}
	return resp, nil
}

// revokeNode revokes every fault of one node.
func (s *Server) revokeNode(ctx context.Context, node string) ([]*pb.TargetResult, error) {
	client, release, err := s.Transport.Node(ctx, node)
	if err != nil {
		return nil, err
	}
	defer release()
	list, err := client.List(ctx, &pb.ListRequest{})
	if err != nil {
		return nil, err
	}
	var out []*pb.TargetResult
	for _, f := range list.GetFaults() {
		r, err := client.Revoke(ctx, &pb.RevokeRequest{Id: f.GetId()})
		if err != nil {
			continue // ended meanwhile
		}
		out = append(out, &pb.TargetResult{Target: infoFromStatus(node, r.GetFault().GetTarget()), Fault: r.GetFault()})
	}
	return out, nil
}
