package kubefault

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
)

// Held is an object (a Fault or a FaultPlan) this process created and
// holds: its lease is renewed and its versions are sent on Updates until
// Release, which deletes it. If the process dies the lease lapses and
// every node ends its faults.
type Held[T any] struct {
	// Object is the object as created.
	Object *T
	// Updates are its versions as the API server reports them; it is
	// closed when someone else deletes the object.
	Updates <-chan *T

	release func() error
	once    sync.Once
	err     error
}

// NewHeld returns a Held whose Release calls release once (for test
// doubles of Hold).
func NewHeld[T any](obj *T, updates <-chan *T, release func() error) *Held[T] {
	return &Held[T]{Object: obj, Updates: updates, release: release}
}

// Release stops renewing the lease and deletes the object, which ends its
// faults on every node.
func (h *Held[T]) Release() error {
	h.once.Do(func() { h.err = h.release() })
	return h.err
}

// Hold creates f (its lease, spec.lease, must be set) and renews the lease
// every quarter of it until Release. The errors of the create are
// classified: PermissionDenied (RBAC), InvalidArgument (the CRD's schema
// and rules), FailedPrecondition (no Fault resource installed).
func (a *API) Hold(ctx context.Context, f *Fault) (*Held[Fault], error) {
	lease, err := f.Spec.LeaseDuration()
	if err != nil {
		return nil, err
	}
	f.APIVersion, f.Kind = Group+"/"+Version, Kind
	return hold[Fault](ctx, a.client.Resource(GVR).Namespace(f.Namespace), f, &f.ObjectMeta, lease)
}

// HoldPlan is Hold for a FaultPlan.
func (a *API) HoldPlan(ctx context.Context, p *FaultPlan) (*Held[FaultPlan], error) {
	s := Spec{Lease: p.Spec.Lease}
	lease, err := s.LeaseDuration()
	if err != nil {
		return nil, err
	}
	p.APIVersion, p.Kind = Group+"/"+Version, PlanKind
	return hold[FaultPlan](ctx, a.client.Resource(PlanGVR), p, &p.ObjectMeta, lease)
}

func hold[T any](ctx context.Context, res dynamic.ResourceInterface, obj any, meta *metav1.ObjectMeta, lease time.Duration) (*Held[T], error) {
	if lease == 0 {
		return nil, fmt.Errorf("%w: a held object needs spec.lease", errdefs.ErrInvalidArgument)
	}
	if meta.Annotations == nil {
		meta.Annotations = map[string]string{}
	}
	meta.Annotations[LeaseAnnotation] = time.Now().UTC().Format(time.RFC3339Nano)
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	delete(u, "status")
	created, err := res.Create(ctx, &unstructured.Unstructured{Object: u}, metav1.CreateOptions{FieldManager: "faultline-gateway"})
	if err != nil {
		return nil, classify(err)
	}
	var out T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(created.Object, &out); err != nil {
		return nil, err
	}
	name, uid := created.GetName(), created.GetUID()
	del := func(ctx context.Context) error {
		err := res.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}
	lw := &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
			return res.Watch(ctx, o)
		},
	}
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w, err := watchtools.NewRetryWatcherWithContext(hctx, created.GetResourceVersion(), lw)
	if err != nil {
		cancel()
		_ = del(context.WithoutCancel(ctx))
		return nil, err
	}
	updates := make(chan *T, 16)
	var wg sync.WaitGroup
	h := NewHeld(&out, updates, func() error {
		cancel()
		wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return del(ctx)
	})
	wg.Add(2)
	go func() { // the watch: the object's versions
		defer wg.Done()
		defer w.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case ev, ok := <-w.ResultChan():
				if !ok {
					return
				}
				u, ok := ev.Object.(*unstructured.Unstructured)
				if !ok || u.GetUID() != uid {
					continue
				}
				if ev.Type == watch.Deleted { // by someone else: revoke --all, kubectl delete
					close(updates)
					return
				}
				var v T
				if runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &v) != nil {
					continue
				}
				select {
				case updates <- &v:
				case <-hctx.Done():
					return
				}
			}
		}
	}()
	go func() { // the lease
		defer wg.Done()
		t := time.NewTicker(lease / 4)
		defer t.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case now := <-t.C:
				patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{LeaseAnnotation: now.UTC().Format(time.RFC3339Nano)}}})
				pctx, pcancel := context.WithTimeout(hctx, lease/2)
				_, err := res.Patch(pctx, name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "faultline-gateway"})
				pcancel()
				if apierrors.IsNotFound(err) {
					return // deleted by someone else (revoke --all)
				}
			}
		}
	}()
	return h, nil
}

// classify maps an API server's refusal of a Fault to the error classes
// that the gateway reports.
func classify(err error) error {
	var status apierrors.APIStatus
	msg := err.Error()
	if s, ok := err.(apierrors.APIStatus); ok {
		status = s
		msg = s.Status().Message
	}
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%w: %s (a team faults its namespace with the Role in deploy/examples/fault-injector-role.yaml)", errdefs.ErrPermissionDenied, msg)
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
		return fmt.Errorf("%w: %s", errdefs.ErrInvalidArgument, msg)
	case apierrors.IsNotFound(err):
		if status != nil && status.Status().Details != nil && status.Status().Details.Kind == "namespaces" {
			return fmt.Errorf("%w: %s", errdefs.ErrNotFound, msg)
		}
		return fmt.Errorf("%w: the API server has no Fault resource (%s): install faultline's CRD (kubectl apply -k deploy)", errdefs.ErrFailedPrecondition, msg)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("%w: %s", errdefs.ErrUnauthenticated, msg)
	}
	return fmt.Errorf("%w: %s", errdefs.ErrUnavailable, msg)
}

// Refresh asks the nodes where a Fault is active for their live counters
// (RefreshAnnotation) and returns the Fault once each of them has answered,
// or as it is after timeout.
func (a *API) Refresh(ctx context.Context, f *Fault, timeout time.Duration) (*Fault, error) {
	res := a.client.Resource(GVR).Namespace(f.Namespace)
	asked := time.Now().UTC().Format(time.RFC3339Nano)
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{RefreshAnnotation: asked}}})
	if _, err := res.Patch(ctx, f.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "faultline-gateway"}); err != nil {
		return nil, classify(err)
	}
	last := f
	deadline := time.Now().Add(timeout)
	for {
		u, err := res.Get(ctx, f.Name, metav1.GetOptions{})
		if err != nil {
			return nil, classify(err)
		}
		var got Fault
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &got); err != nil {
			return nil, err
		}
		last = &got
		answered := true
		for _, n := range got.Status.Nodes {
			if n.Phase == PhaseActive && n.Refreshed != asked {
				answered = false
			}
		}
		if answered || time.Now().After(deadline) {
			return last, nil
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
	}
}
