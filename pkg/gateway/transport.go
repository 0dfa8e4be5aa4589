package gateway

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/faultline-dev/faultline/proto/faultline/v1"
)

// Transport reaches the faultlined of a node.
type Transport interface {
	// Node returns a client for the node's faultlined; release it with the
	// returned function when the fault is over.
	Node(ctx context.Context, node string) (pb.NodeClient, func(), error)
	// Nodes lists the nodes that run a faultlined.
	Nodes(ctx context.Context) ([]string, error)
}

// LocalNode is the node name of this machine's targets in local mode.
const LocalNode = "local"

// LocalTransport reaches the one faultlined of this machine over its unix
// socket; every node name is this machine.
type LocalTransport struct {
	Socket string // faultlined's socket

	once sync.Once
	conn *grpc.ClientConn
	err  error
}

// Node returns the local faultlined, whatever the node name.
func (l *LocalTransport) Node(_ context.Context, _ string) (pb.NodeClient, func(), error) {
	if _, err := os.Stat(l.Socket); err != nil {
		return nil, nil, fmt.Errorf("%w: cannot reach faultlined at %s: %v (is faultlined running?)", errdefs.ErrUnavailable, l.Socket, err)
	}
	l.once.Do(func() {
		l.conn, l.err = grpc.NewClient("unix://"+l.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	})
	if l.err != nil {
		return nil, nil, l.err
	}
	return pb.NewNodeClient(l.conn), func() {}, nil
}

// Nodes is this machine.
func (l *LocalTransport) Nodes(context.Context) ([]string, error) { return []string{LocalNode}, nil }

// Close closes the connection.
func (l *LocalTransport) Close() error {
	if l.conn != nil {
		return l.conn.Close()
	}
	return nil
}
