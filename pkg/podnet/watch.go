package podnet

import (
	"context"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// NodePods watches the pods of one node (field selector spec.nodeName) and
// keeps only what faultlined needs of them, to stay small. It implements
// Pods.
type NodePods struct {
	store cache.Store
	// synced reports whether the first list has arrived.
	synced cache.InformerSynced
}

// WatchNode starts watching the pods of node until ctx ends. onDelete is
// called (on the watch goroutine) for each pod that goes away. Wait for
// Synced before trusting Pod.
func WatchNode(ctx context.Context, client kubernetes.Interface, node string, onDelete func(*corev1.Pod), log *slog.Logger) (*NodePods, error) {
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
		}))
	inf := factory.Core().V1().Pods().Informer()
	if err := inf.SetTransform(slim); err != nil {
		return nil, fmt.Errorf("pod watch: %w", err)
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				log.Debug("pod deleted", "pod", p.Namespace+"/"+p.Name)
				onDelete(p)
			}
		},
	}); err != nil {
		return nil, fmt.Errorf("pod watch: %w", err)
	}
	factory.Start(ctx.Done())
	return &NodePods{store: inf.GetStore(), synced: inf.HasSynced}, nil
}

// slim keeps the fields faultlined reads: identity, deletion, hostNetwork.
func slim(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace, UID: p.UID,
			ResourceVersion: p.ResourceVersion, DeletionTimestamp: p.DeletionTimestamp,
		},
		Spec: corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork},
	}, nil
}

// Synced reports whether the pods of the node have been listed once.
func (n *NodePods) Synced() bool { return n.synced() }

// Pod returns a pod of this node.
func (n *NodePods) Pod(namespace, name string) (*corev1.Pod, bool) {
	obj, ok, err := n.store.GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return nil, false
	}
	p, ok := obj.(*corev1.Pod)
	return p, ok
}
