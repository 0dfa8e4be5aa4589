package kubefault

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	corev1 "k8s.io/api/core/v1"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// Cluster is what the controller asks of the API server beyond its watch:
// Kubernetes (API) for a real cluster, a test double in unit tests.
type Cluster interface {
	// NamespaceLabels returns a namespace's labels.
	NamespaceLabels(ctx context.Context, name string) (map[string]string, error)
	// ServiceSelector returns a Service's pod selector.
	ServiceSelector(ctx context.Context, namespace, name string) (map[string]string, error)
	// CountPods counts the pods of namespace that sel matches, in the
	// whole cluster, up to at least limit+1.
	CountPods(ctx context.Context, namespace string, sel labels.Selector, limit int) (int, error)
	// ApplyStatus writes this node's entry of a Fault's status.
	ApplyStatus(ctx context.Context, namespace, name string, st NodeStatus) error
	// Event records an event on a Fault or a pod (kubectl describe shows
	// it); warning marks a refusal.
	Event(ctx context.Context, on Ref, warning bool, reason, message string) error
}

// Ref names the object an event is about.
type Ref struct {
	APIVersion, Kind, Namespace, Name string
	UID                               types.UID
}

// FaultRef names a Fault for an event.
func FaultRef(f *Fault) Ref {
	return Ref{APIVersion: Group + "/" + Version, Kind: Kind, Namespace: f.Namespace, Name: f.Name, UID: f.UID}
}

// PodRef names a pod for an event.
func PodRef(p *corev1.Pod) Ref {
	return Ref{APIVersion: "v1", Kind: "Pod", Namespace: p.Namespace, Name: p.Name, UID: p.UID}
}

// API is Cluster on a real API server, through the dynamic client (which,
// unlike the full clientset, does not register every API group).
type API struct {
	client dynamic.Interface
	node   string
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
	return &API{client: client, node: node, Manager: "faultlined-" + node}, nil
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

var events = schema.GroupVersionResource{Version: "v1", Resource: "events"}

func (a *API) Event(ctx context.Context, on Ref, warning bool, reason, message string) error {
	typ := "Normal"
	if warning {
		typ = "Warning"
	}
	now := metav1.Now().UTC().Format("2006-01-02T15:04:05Z")
	ev := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Event",
		"metadata":       map[string]any{"generateName": on.Name + ".", "namespace": on.Namespace},
		"involvedObject": map[string]any{"apiVersion": on.APIVersion, "kind": on.Kind, "namespace": on.Namespace, "name": on.Name, "uid": string(on.UID)},
		"reason":         reason, "message": message, "type": typ, "count": int64(1),
		"firstTimestamp": now, "lastTimestamp": now,
		"source":             map[string]any{"component": "faultlined", "host": a.node},
		"reportingComponent": "faultline.dev/faultlined", "reportingInstance": a.node,
	}}
	_, err := a.client.Resource(events).Namespace(on.Namespace).Create(ctx, ev, metav1.CreateOptions{})
	return err
}

// DeleteAll deletes every Fault of every namespace (gateway.FaultObjects).
func (a *API) DeleteAll(ctx context.Context) ([]string, error) {
	list, err := a.client.Resource(GVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var (
		mu      sync.Mutex
		deleted []string
		errs    []error
		wg      sync.WaitGroup
	)
	for _, f := range list.Items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := a.client.Resource(GVR).Namespace(f.GetNamespace()).Delete(ctx, f.GetName(), metav1.DeleteOptions{})
			mu.Lock()
			defer mu.Unlock()
			if err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, err)
				return
			}
			deleted = append(deleted, f.GetNamespace()+"/"+f.GetName())
		}()
	}
	wg.Wait()
	slices.Sort(deleted)
	return deleted, errors.Join(errs...)
}

// Sink takes the Faults a watch sees.
type Sink interface {
	Sync(*Fault)
	Delete(namespace, name string, uid types.UID)
}

// Watch feeds c the Faults of every namespace until ctx ends; synced
// reports when the first list has arrived.
func (a *API) Watch(ctx context.Context, c Sink, log *slog.Logger) (synced func() bool, err error) {
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
