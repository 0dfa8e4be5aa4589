package kube

import (
	"context"
	"errors"
	"testing"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/faultline-dev/faultline/pkg/targets"
)

// A unit test on a fake clientset; test/e2e runs the source against a real
// API server.
func pod(name string, labels map[string]string, phase corev1.PodPhase, ready bool) *corev1.Pod {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: labels, UID: k8stypes.UID("uid-" + name)},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{
			Ports: []corev1.ContainerPort{{Name: "web", ContainerPort: 8080}},
		}}},
		Status: corev1.PodStatus{Phase: phase, PodIP: "198.18.80.9", Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}},
	}
}

func TestResolve(t *testing.T) {
	terminating := pod("web-4", map[string]string{"app": "web"}, corev1.PodRunning, true)
	terminating.DeletionTimestamp = &metav1.Time{}
	client := fake.NewClientset(
		pod("web-1", map[string]string{"app": "web", "tier": "front"}, corev1.PodRunning, true),
		pod("web-2", map[string]string{"app": "web", "canary": "yes"}, corev1.PodRunning, true),
		pod("web-3", map[string]string{"app": "web"}, corev1.PodPending, false),
		terminating,
		pod("web-5", map[string]string{"app": "web"}, corev1.PodRunning, false),
		pod("db-1", map[string]string{"app": "db"}, corev1.PodRunning, true),
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, TargetPort: intstr.FromString("web")},
			}},
		},
	)
	s := &Source{Client: client}
	ctx := context.Background()

	res, err := s.Resolve(ctx, targets.Set{Pods: &targets.Selector{Namespace: "shop", Select: map[string]string{"app": "web"}, Exclude: map[string]string{"canary": "yes"}}})
	if err != nil {
		t.Fatal(err)
	}
	got, skipped := res.Targets, res.Skipped
	if len(got) != 1 || got[0].Name != "web-1" || got[0].UID != "uid-web-1" || got[0].Node != "n1" || got[0].Ports.Named["web"] != 8080 {
		t.Errorf("targets %+v, want web-1 only", got)
	}
	reasons := map[string]string{}
	for _, sk := range skipped {
		reasons[sk.Name] = sk.Reason
	}
	if reasons["web-3"] != "pending: phase Pending" || reasons["web-4"] != "terminating" || reasons["web-5"] != "not ready" || len(reasons) != 3 {
		t.Errorf("skipped %v", reasons)
	}

	res, err = s.Resolve(ctx, targets.Set{Service: &targets.Service{Name: "web", Namespace: "shop"}})
	got = res.Targets
	if err != nil || len(got) != 2 {
		t.Fatalf("service: %v, %v; want web-1 and web-2", got, err)
	}
	if port, err := got[0].ResolvePort(0, "", 80); err != nil || port != 8080 {
		t.Errorf("service port: %d, %v; want 8080 through targetPort web", port, err)
	}

	_, err = s.Resolve(ctx, targets.Set{Service: &targets.Service{Name: "nope", Namespace: "shop"}})
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("missing service: %v, want NotFound", err)
	}
}
