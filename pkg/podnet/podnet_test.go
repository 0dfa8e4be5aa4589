package podnet

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/faultline-dev/faultline/pkg/engine"
)

func pod(ns, name, uid string, hostNet bool) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: k8stypes.UID("uid-" + uid)},
		Spec:       corev1.PodSpec{HostNetwork: hostNet},
	}
}

func TestResolverRules(t *testing.T) {
	terminating := pod("shop", "leaving", "3", false)
	terminating.DeletionTimestamp = &metav1.Time{}
	r := &Resolver{
		Node: "n1",
		Pods: StaticPods{
			pod("shop", "web", "1", false), pod("shop", "hostnet", "2", true), terminating,
			pod("kube-system", "dns", "4", false), pod("faultline", "faultlined-x", "5", false),
		},
		Sandboxes: StaticSandboxes{"uid-1": 4242, "uid-4": 99},
		Protected: []string{"kube-system", "faultline"},
	}
	ctx := context.Background()
	podTarget := func(ns, name, uid string) engine.Target {
		return engine.Target{Pod: engine.PodRef{Namespace: ns, Name: name, UID: uid}}
	}
	got, err := r.ResolveTarget(ctx, podTarget("shop", "web", ""))
	if err != nil || got.PID != 4242 || got.Pod.UID != "uid-1" {
		t.Fatalf("web: got %+v, %v; want pid 4242 uid-1", got, err)
	}
	for _, tc := range []struct {
		target engine.Target
		class  error
		says   string
	}{
		{podTarget("shop", "hostnet", ""), errdefs.ErrFailedPrecondition, "host network"},
		{podTarget("shop", "leaving", ""), errdefs.ErrFailedPrecondition, "terminating"},
		{podTarget("shop", "gone", ""), errdefs.ErrNotFound, "not on node n1"},
		{podTarget("shop", "web", "uid-old"), errdefs.ErrNotFound, "re-created"},
		{podTarget("kube-system", "dns", ""), errdefs.ErrFailedPrecondition, "--allow-protected-namespaces"},
		{podTarget("faultline", "faultlined-x", ""), errdefs.ErrFailedPrecondition, "--allow-protected-namespaces"},
		{engine.Target{PID: 1}, errdefs.ErrFailedPrecondition, "Kubernetes mode"},
		{engine.Target{NetnsPath: "/proc/1/ns/net"}, errdefs.ErrFailedPrecondition, "Kubernetes mode"},
	} {
		_, err := r.ResolveTarget(ctx, tc.target)
		if !errors.Is(err, tc.class) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: got %v, want %v saying %q", tc.target, err, tc.class, tc.says)
		}
	}
	r.AllowProtected = true
	if got, err := r.ResolveTarget(ctx, podTarget("kube-system", "dns", "")); err != nil || got.PID != 99 {
		t.Errorf("kube-system allowed by flag: got %+v, %v", got, err)
	}
}
