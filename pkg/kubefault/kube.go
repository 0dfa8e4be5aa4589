package kubefault

import (
	"context"
	"fmt"
	"log/slog"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// API is Cluster on a real API server, through the dynamic client (which,
// unlike the full clientset, does not register every API group).
type API struct {
	client dynamic.Interface
	// Manager is the server-side apply field manager of this node's
	// status entries: one per node, so nodes never overwrite each other.
	Manager string
}

var (
	namespaces = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	services   = schema.GroupVersionResource{Version: "v1", Resource: "services"}
	pods       = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
)

// NewAPI returns the Cluster of cfg, writing status as node.
func NewAPI(cfg *rest.Config, node string) (*API, error) {
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &API{client: client, Manager: "faultlined-" + node}, nil
}

func (a *API) NamespaceLabels(ctx context.Context, name string) (map[string]string, error) {
	ns, err := a.client.Resource(namespaces).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return ns.GetLabels(), nil
}

func (a *API) ServiceSelector(ctx context.Context, namespace, name string) (map[string]string, error) {
	svc, err := a.client.Resource(services).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	sel, _, err := unstructured.NestedStringMap(svc.Object, "spec", "selector")
	return sel, err
}

func (a *API) CountPods(ctx context.Context, namespace string, sel labels.Selector, limit int) (int, error) {
	list, err := a.client.Resource(pods).Namespace(namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String(), Limit: int64(limit + 1)})
	if err != nil {
		return 0, err
	}
	return len(list.Items), nil
}

func (a *API) ApplyStatus(ctx context.Context, namespace, name string, st NodeStatus) error {
	node, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&st)
	if err != nil {
		return err
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": Group + "/" + Version, "kind": Kind,
		"metadata": map[string]any{"name": name, "namespace": namespace},
		"status":   map[string]any{"nodes": []any{node}},
	}}
	_, err = a.client.Resource(GVR).Namespace(namespace).ApplyStatus(ctx, name, u, metav1.ApplyOptions{FieldManager: a.Manager, Force: true})
	return err
}

// Watch feeds c the Faults of every namespace until ctx ends; synced
// reports when the first list has arrived.
func (a *API) Watch(ctx context.Context, c *Controller, log *slog.Logger) (synced func() bool, err error) {
	// A plain informer over the dynamic client: dynamicinformer would link
	// every API group's types into faultlined.
	res := a.client.Resource(GVR)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return res.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return res.Watch(ctx, o)
		},
	}
	inf := cache.NewSharedIndexInformer(lw, &unstructured.Unstructured{}, 0, cache.Indexers{})
	decode := func(obj any) (*Fault, bool) {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return nil, false
		}
		var fl Fault
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &fl); err != nil {
			log.Warn("a Fault this faultlined cannot read", "fault", u.GetNamespace()+"/"+u.GetName(), "err", err)
			return nil, false
		}
		return &fl, true
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if fl, ok := decode(obj); ok {
				c.Sync(fl)
			}
		},
		UpdateFunc: func(_, obj any) {
			if fl, ok := decode(obj); ok {
				c.Sync(fl)
			}
		},
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if u, ok := obj.(*unstructured.Unstructured); ok {
				c.Delete(u.GetNamespace(), u.GetName(), u.GetUID())
			}
		},
	}); err != nil {
		return nil, fmt.Errorf("fault watch: %w", err)
	}
	go inf.Run(ctx.Done())
	return inf.HasSynced, nil
}
