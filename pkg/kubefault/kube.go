package kubefault

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
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
	// ListPods lists the pods of namespace that sel matches, in the whole
	// cluster: all of them, or when limit > 0, at most limit+1.
	ListPods(ctx context.Context, namespace string, sel labels.Selector, limit int) ([]PodID, error)
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

// FaultRef names a Fault for an event: a plan step's is its plan's
// (whose events, cluster-scoped, are in namespace default).
func FaultRef(f *Fault) Ref {
	if plan, _, ok := PlanOf(f); ok {
		uid, _, _ := strings.Cut(string(f.UID), "/")
		return Ref{APIVersion: Group + "/" + Version, Kind: PlanKind, Namespace: metav1.NamespaceDefault, Name: plan, UID: types.UID(uid)}
	}
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

// PodID names a pod of the cluster.
type PodID struct {
	Name string
	UID  types.UID
}

func (a *API) ListPods(ctx context.Context, namespace string, sel labels.Selector, limit int) ([]PodID, error) {
	opts := metav1.ListOptions{LabelSelector: sel.String()}
	if limit > 0 {
		opts.Limit = int64(limit + 1)
	}
	// Only the names: the pods of this node come from the node's own
	// watch; this asks how many there are in the cluster.
	list, err := a.client.Resource(pods).Namespace(namespace).List(ctx, opts)
	if err != nil {
		return nil, err
	}
	out := make([]PodID, 0, len(list.Items))
	for _, p := range list.Items {
		if p.GetDeletionTimestamp() == nil {
			out = append(out, PodID{Name: p.GetName(), UID: p.GetUID()})
		}
	}
	return out, nil
}

// ApplyStatus writes this node's entry: of a Fault, or for a plan step
// (name PLAN/STEP, see StepFault) of its plan, with a field manager per
// node and step so that a node's steps never remove each other's.
func (a *API) ApplyStatus(ctx context.Context, namespace, name string, st NodeStatus) error {
	node, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&st)
	if err != nil {
		return err
	}
	if plan, step, ok := strings.Cut(name, "/"); ok {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": Group + "/" + Version, "kind": PlanKind,
			"metadata": map[string]any{"name": plan},
			"status":   map[string]any{"steps": []any{map[string]any{"name": step, "nodes": []any{node}}}},
		}}
		_, err = a.client.Resource(PlanGVR).ApplyStatus(ctx, plan, u, metav1.ApplyOptions{FieldManager: a.Manager + "/" + step, Force: true})
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

// DeleteAll deletes every FaultPlan and every Fault of every namespace
// (gateway.FaultObjects), and returns them as "FaultPlan NAME" and
// "Fault NAMESPACE/NAME".
func (a *API) DeleteAll(ctx context.Context) ([]string, error) {
	var (
		mu      sync.Mutex
		deleted []string
		errs    []error
		wg      sync.WaitGroup
	)
	for _, kind := range []struct {
		name string
		gvr  schema.GroupVersionResource
	}{{PlanKind, PlanGVR}, {Kind, GVR}} { // plans first: none creates a fault again
		list, err := a.client.Resource(kind.gvr).List(ctx, metav1.ListOptions{})
		if err != nil {
			if kind.name == PlanKind && apierrors.IsNotFound(err) {
				continue // an older CRD without plans
			}
			return deleted, classify(err)
		}
		for _, u := range list.Items {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := a.client.Resource(kind.gvr).Namespace(u.GetNamespace()).Delete(ctx, u.GetName(), metav1.DeleteOptions{})
				mu.Lock()
				defer mu.Unlock()
				if err != nil && !apierrors.IsNotFound(err) {
					errs = append(errs, classify(err))
					return
				}
				deleted = append(deleted, kind.name+" "+strings.TrimPrefix(u.GetNamespace()+"/"+u.GetName(), "/"))
			}()
		}
		wg.Wait()
	}
	slices.Sort(deleted)
	return deleted, errors.Join(errs...)
}

// Sink takes the Faults and FaultPlans a watch sees.
type Sink interface {
	Sync(*Fault)
	Delete(namespace, name string, uid types.UID)
	SyncPlan(*FaultPlan)
	DeletePlan(name string, uid types.UID)
}

// Watch feeds c the Faults of every namespace and the FaultPlans until ctx
// ends; synced reports when the first lists have arrived.
func (a *API) Watch(ctx context.Context, c Sink, log *slog.Logger) (synced func() bool, err error) {
	faults, err := a.watch(ctx, GVR, func(u *unstructured.Unstructured) {
		var fl Fault
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &fl); err != nil {
			log.Warn("a Fault this faultlined cannot read", "fault", u.GetNamespace()+"/"+u.GetName(), "err", err)
			return
		}
		c.Sync(&fl)
	}, func(u *unstructured.Unstructured) { c.Delete(u.GetNamespace(), u.GetName(), u.GetUID()) })
	if err != nil {
		return nil, err
	}
	plans, err := a.watch(ctx, PlanGVR, func(u *unstructured.Unstructured) {
		var p FaultPlan
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p); err != nil {
			log.Warn("a FaultPlan this faultlined cannot read", "plan", u.GetName(), "err", err)
			return
		}
		c.SyncPlan(&p)
	}, func(u *unstructured.Unstructured) { c.DeletePlan(u.GetName(), u.GetUID()) })
	if err != nil {
		return nil, err
	}
	return func() bool { return faults() && plans() }, nil
}

// watch runs a plain informer over the dynamic client (dynamicinformer
// would link every API group's types into faultlined).
func (a *API) watch(ctx context.Context, gvr schema.GroupVersionResource, sync, del func(*unstructured.Unstructured)) (func() bool, error) {
	res := a.client.Resource(gvr)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return res.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return res.Watch(ctx, o)
		},
	}
	inf := cache.NewSharedIndexInformer(lw, &unstructured.Unstructured{}, 0, cache.Indexers{})
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if u, ok := obj.(*unstructured.Unstructured); ok {
				sync(u)
			}
		},
		UpdateFunc: func(_, obj any) {
			if u, ok := obj.(*unstructured.Unstructured); ok {
				sync(u)
			}
		},
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if u, ok := obj.(*unstructured.Unstructured); ok {
				del(u)
			}
		},
	}); err != nil {
		return nil, fmt.Errorf("%s watch: %w", gvr.Resource, err)
	}
	go inf.Run(ctx.Done())
	return inf.HasSynced, nil
}

// List lists the Faults of a namespace, or of every namespace when it is
// empty.
func (a *API) List(ctx context.Context, namespace string) ([]Fault, error) {
	list, err := a.client.Resource(GVR).Namespace(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, classify(err)
	}
	out := make([]Fault, 0, len(list.Items))
	for _, u := range list.Items {
		var f Fault
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &f); err == nil {
			out = append(out, f)
		}
	}
	return out, nil
}
