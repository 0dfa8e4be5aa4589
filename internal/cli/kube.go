package cli

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/faultline-dev/faultline/pkg/gateway"
	"github.com/faultline-dev/faultline/pkg/kubefault"
	"github.com/faultline-dev/faultline/pkg/targets/kube"
)

// kubeParams configure the Kubernetes gateway.
type kubeParams struct {
	kubeconfig string
	context    string
	maxTargets int
	lease      time.Duration
}

func (k *kubeParams) bind(f *pflag.FlagSet) {
	f.StringVar(&k.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster)")
	f.StringVar(&k.context, "context", "", "kubeconfig context (default: its current context)")
	f.IntVar(&k.maxTargets, "max-targets", 0, "spec.maxTargets of the gateway's Faults: how many pods one call may fault (default: faultlined's --fault-target-limit)")
	f.DurationVar(&k.lease, "lease", gateway.DefaultLease, "lease of the gateway's Faults: when the gateway dies, its faults end within this (1s to 1h)")
}

// restConfig loads the kubeconfig.
func (k *kubeParams) restConfig() (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if k.kubeconfig != "" {
		rules.ExplicitPath = k.kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: k.context}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes configuration (give --kubeconfig, or --local for local mode): %w", err)
	}
	cfg.UserAgent = "faultline"
	cfg.QPS, cfg.Burst = 20, 40 // lease renewals, watches and status refreshes of several faults at once
	return cfg, nil
}

// server is the gateway in Kubernetes mode: each inject call is a Fault
// object created with the kubeconfig's credentials, so Kubernetes RBAC on
// Faults in the target namespace decides who may fault what.
func (k *kubeParams) server(logger *slog.Logger) (*gateway.Server, func(), error) {
	if k.lease < kubefault.MinLease || k.lease > kubefault.MaxLease {
		return nil, nil, fmt.Errorf("--lease must be from 1s to 1h, got %s", k.lease)
	}
	if k.maxTargets < 0 {
		return nil, nil, fmt.Errorf("--max-targets must not be negative, got %d", k.maxTargets)
	}
	cfg, err := k.restConfig()
	if err != nil {
		return nil, nil, err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes client: %w", err)
	}
	objects, err := kubefault.NewAPI(cfg, "gateway")
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes client: %w", err)
	}
	s := &gateway.Server{Source: &kube.Source{Client: client}, Objects: objects, Logger: logger, Lease: k.lease, FaultTargetLimit: k.maxTargets}
	return s, func() {}, nil
}
