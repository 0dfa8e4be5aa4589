package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/faultline-dev/faultline/pkg/engine"
	"github.com/faultline-dev/faultline/pkg/kubefault"
	"github.com/faultline-dev/faultline/pkg/kubefault/nodecontroller"
	"github.com/faultline-dev/faultline/pkg/nodeapi"
	"github.com/faultline-dev/faultline/pkg/podnet"
)

// kubeConfig is Kubernetes mode's configuration.
type kubeConfig struct {
	enabled        bool
	kubeconfig     string
	node           string
	namespace      string
	containerd     string
	ctrNamespace   string
	allowProtected bool
	faults         bool
	targetLimit    int
	// stateDir keeps what a restarted faultlined must know (the socket's
	// directory: in the DaemonSet, an emptyDir).
	stateDir string
}

func (k *kubeConfig) flags(fs *flag.FlagSet) {
	fs.BoolVar(&k.enabled, "kubernetes", false, "Kubernetes mode: targets are pods of this node")
	fs.StringVar(&k.kubeconfig, "kubeconfig", "", "kubeconfig file; in-cluster configuration when empty")
	fs.StringVar(&k.node, "node-name", os.Getenv("NODE_NAME"), "this node's name (env NODE_NAME)")
	fs.StringVar(&k.namespace, "namespace", os.Getenv("POD_NAMESPACE"), "faultline's own namespace, protected like kube-system (env POD_NAMESPACE)")
	fs.StringVar(&k.containerd, "containerd-socket", "/run/containerd/containerd.sock",
		"containerd's socket (k3s: /run/k3s/containerd/containerd.sock; MicroK8s: /var/snap/microk8s/common/run/containerd.sock)")
	fs.StringVar(&k.ctrNamespace, "containerd-namespace", "k8s.io", "containerd namespace of the Kubernetes containers")
	fs.BoolVar(&k.allowProtected, "allow-protected-namespaces", false, "also fault pods in kube-system and in faultline's own namespace")
	fs.BoolVar(&k.faults, "faults", false, "apply the Fault objects (faultline.dev/v1alpha1, deploy/crd.yaml) that match pods of this node")
	fs.IntVar(&k.targetLimit, "fault-target-limit", nodecontroller.DefaultTargetLimit, "refuse a Fault matching more pods than this, unless its spec.maxTargets allows them")
}

// start watches the node's pods, resolves pod targets through containerd,
// ends a pod's faults when it is deleted, and reports SERVING once the pods
// are listed and containerd answers.
func (k *kubeConfig) start(ctx context.Context, logger *slog.Logger, api *nodeapi.Server, eng *engine.Engine) error {
	if k.node == "" {
		return fmt.Errorf("--kubernetes needs --node-name or NODE_NAME (the downward API's spec.nodeName)")
	}
	var cfg *rest.Config
	var err error
	if k.kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", k.kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return fmt.Errorf("kubernetes configuration: %w", err)
	}
	cfg.UserAgent = "faultlined"
	// client-go's default (5 requests/s, bursts of 10) queues a node's
	// requests behind each other's: a Fault costs 7 + 2 per target
	// (reads, status, events), so a few Faults in a row stalled the next
	// one for seconds. The kubelet's own limits.
	cfg.QPS, cfg.Burst = 50, 100
	sock, err := filepath.Abs(k.containerd)
	if err != nil {
		return err
	}
	ctr := &podnet.Containerd{Address: sock, Namespace: k.ctrNamespace}
	pods, err := podnet.WatchNode(ctx, cfg, k.node, func(p *corev1.Pod) {
		uid := string(p.UID)
		if n := eng.EndWhere(func(t engine.Target) bool { return t.Pod.UID == uid }, engine.ReasonTargetDeleted); n > 0 {
			logger.Info("pod deleted mid-fault: its faults end", "pod", p.Namespace+"/"+p.Name, "faults", n)
		}
	}, logger)
	if err != nil {
		return err
	}
	protected := []string{"kube-system"}
	if k.namespace != "" {
		protected = append(protected, k.namespace)
	}
	resolver := &podnet.Resolver{Node: k.node, Pods: pods, Sandboxes: ctr, Protected: protected, AllowProtected: k.allowProtected}
	api.Targets = resolver
	faultsSynced := func() bool { return true }
	if k.faults {
		kapi, err := kubefault.NewAPI(cfg, k.node)
		if err != nil {
			return err
		}
		journal, err := nodecontroller.OpenJournal(filepath.Join(k.stateDir, "faults"))
		if err != nil {
			return fmt.Errorf("the Faults' journal: %w", err)
		}
		c := &nodecontroller.Controller{Node: k.node, Faults: nodeapi.Engine(eng), Targets: resolver, Pods: pods, Cluster: kapi,
			TargetLimit: k.targetLimit, Journal: journal, Logger: logger.With("component", "faults")}
		if !k.allowProtected {
			c.Protected = protected
		}
		c.Start(ctx)
		if faultsSynced, err = kapi.Watch(ctx, c, logger); err != nil {
			return err
		}
	}
	go func() {
		defer ctr.Close()
		for ctx.Err() == nil {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			err := ctr.Check(cctx)
			cancel()
			ready := pods.Synced() && faultsSynced() && err == nil
			api.SetServing(ready)
			if err != nil {
				logger.Warn("containerd does not answer", "err", err)
			}
			every := 5 * time.Second
			if !ready {
				every = 250 * time.Millisecond
			}
			select {
			case <-ctx.Done():
			case <-time.After(every):
			}
		}
	}()
	logger.Info("kubernetes mode", "node", k.node, "containerd", sock, "protected", protected, "allow_protected", k.allowProtected, "faults", k.faults)
	return nil
}
