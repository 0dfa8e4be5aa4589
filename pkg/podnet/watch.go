package podnet

import (
	"context"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
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
// Synced before trusting Pod. It speaks to the API server with a REST client
// that knows core/v1 only, not the full clientset, which would register
// every API group and double faultlined's size.
func WatchNode(ctx context.Context, cfg *rest.Config, node string, onDelete func(*corev1.Pod), log *slog.Logger) (*NodePods, error) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	cfg = rest.CopyConfig(cfg)
	cfg.GroupVersion = &corev1.SchemeGroupVersion
	cfg.APIPath = "/api"
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	client, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("pod watch: %w", err)
	}
	lw := cache.NewListWatchFromClient(client, "pods", metav1.NamespaceAll, fields.OneTermEqualSelector("spec.nodeName", node))
	inf := cache.NewSharedIndexInformer(lw, &corev1.Pod{}, 0, cache.Indexers{})
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
	go inf.Run(ctx.Done())
	return &NodePods{store: inf.GetStore(), synced: inf.HasSynced}, nil
}

// slim keeps the fields faultlined reads: identity, labels, deletion,
// hostNetwork, phase and named container ports.
func slim(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	var ctrs []corev1.Container
	for _, c := range p.Spec.Containers {
		var ports []corev1.ContainerPort
		for _, port := range c.Ports {
			if port.Name != "" {
				ports = append(ports, corev1.ContainerPort{Name: port.Name, ContainerPort: port.ContainerPort})
			}
		}
		if len(ports) > 0 {
			ctrs = append(ctrs, corev1.Container{Ports: ports})
		}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace, UID: p.UID, Labels: p.Labels,
			ResourceVersion: p.ResourceVersion, DeletionTimestamp: p.DeletionTimestamp,
		},
		Spec:   corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork, Containers: ctrs},
		Status: corev1.PodStatus{Phase: p.Status.Phase},
	}, nil
}

// List returns the pods of this node in namespace that sel matches.
func (n *NodePods) List(namespace string, sel labels.Selector) []*corev1.Pod {
	var out []*corev1.Pod
	for _, obj := range n.store.List() {
		if p, ok := obj.(*corev1.Pod); ok && p.Namespace == namespace && sel.Matches(labels.Set(p.Labels)) {
			out = append(out, p)
		}
	}
	return out
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
