package gateway

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc/status"

	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// listTimeout bounds asking one node for its faults.
const listTimeout = 10 * time.Second

// Status lists the faults running now, with their live counters: every
// fault on every node, or the faults on a target set's targets. A node
// that does not answer is named in the response; the call fails only
// when no node answers.
func (s *Server) Status(ctx context.Context, req *pb.StatusRequest) (*pb.StatusResponse, error) {
	if s.Objects != nil {
		return s.statusObjects(ctx, req)
	}
	resp := &pb.StatusResponse{Total: &pb.Counters{}}
	var (
		nodes []string
		want  map[string]*pb.TargetInfo // node and target key → target; nil: all
	)
	if req.GetTargets() != nil {
		res, err := s.resolve(ctx, req.GetTargets())
		if err != nil {
			return nil, err
		}
		resp.Notes = res.Notes
		want = map[string]*pb.TargetInfo{}
		for _, t := range res.Targets {
			ti := targetToProto(t)
			want[t.Node+"\x00"+targetKey(ti.GetTarget())] = ti
			if !slices.Contains(nodes, t.Node) {
				nodes = append(nodes, t.Node)
			}
		}
		slices.Sort(nodes)
	} else {
		var err error
		if nodes, err = s.Transport.Nodes(ctx); err != nil {
			return nil, err
		}
	}

	faults, errs := s.listNodes(ctx, nodes)
	for i, node := range nodes {
		if errs[i] != nil {
			resp.Unreachable = append(resp.Unreachable, fmt.Sprintf("node %s: %s", node, errorMessage(errs[i])))
			continue
		}
		for _, f := range faults[i] {
			ti := infoFromStatus(node, f.GetTarget())
			if want != nil {
				if ti = want[node+"\x00"+targetKey(f.GetTarget())]; ti == nil {
					continue
				}
			}
			resp.Faults = append(resp.Faults, &pb.TargetResult{Target: ti, Fault: f})
			addCounters(resp.Total, f.GetCounters())
		}
	}
	if len(nodes) > 0 && len(resp.Unreachable) == len(nodes) {
		return nil, fmt.Errorf("%w: no faultlined answered: %s", errdefs.ErrUnavailable, strings.Join(resp.Unreachable, "; "))
	}
	slices.SortStableFunc(resp.Faults, func(a, b *pb.TargetResult) int {
		return cmp.Or(cmp.Compare(a.GetTarget().GetNode(), b.GetTarget().GetNode()),
			cmp.Compare(targetKey(a.GetTarget().GetTarget()), targetKey(b.GetTarget().GetTarget())),
			cmp.Compare(a.GetFault().GetId(), b.GetFault().GetId()))
	})
	return resp, nil
}

// listNodes asks every node for its faults, at most MaxStarting at once.
func (s *Server) listNodes(ctx context.Context, nodes []string) ([][]*pb.FaultStatus, []error) {
	faults, errs := make([][]*pb.FaultStatus, len(nodes)), make([]error, len(nodes))
	sem := make(chan struct{}, cmp.Or(s.MaxStarting, 32))
	var wg sync.WaitGroup
	for i, node := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(ctx, listTimeout)
			defer cancel()
			client, release, err := s.Transport.Node(ctx, node)
			if err != nil {
				errs[i] = err
				return
			}
			defer release()
			resp, err := client.List(ctx, &pb.ListRequest{})
			faults[i], errs[i] = resp.GetFaults(), err
		}()
	}
	wg.Wait()
	return faults, errs
}

// targetKey names a node's target the same way whether the gateway
// resolved it or the node reports it.
func targetKey(t *pb.Target) string {
	switch k := t.GetKind().(type) {
	case *pb.Target_Pod:
		return "pod " + k.Pod.GetNamespace() + "/" + k.Pod.GetName()
	case *pb.Target_Pid:
		return "pid " + strconv.Itoa(int(k.Pid))
	}
	return "netns " + t.GetNetnsPath()
}

// infoFromStatus describes the target of a fault a node reports.
func infoFromStatus(node string, t *pb.Target) *pb.TargetInfo {
	ti := &pb.TargetInfo{Node: node, Target: t}
	if p := t.GetPod(); p != nil {
		ti.Name, ti.Namespace = p.GetName(), p.GetNamespace()
	}
	return ti
}

func errorMessage(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Message()
	}
	return err.Error()
}
