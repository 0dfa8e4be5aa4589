package cli

import (
	"fmt"
	"log/slog"

	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/faultline-dev/faultline/pkg/gateway"
	"github.com/faultline-dev/faultline/pkg/kubefault"
	"github.com/faultline-dev/faultline/pkg/targets/kube"
)

// kubeParams configure the Kubernetes gateway.
type kubeParams struct {
	kubeconfig string
	context    string
	namespace  string
	selector   string
	port       int
}

func (k *kubeParams) bind(f *pflag.FlagSet) {
	f.StringVar(&k.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster)")
	f.StringVar(&k.context, "context", "", "kubeconfig context (default: its current context)")
	f.StringVar(&k.namespace, "faultline-namespace", "faultline", "namespace of the faultlined DaemonSet")
	f.StringVar(&k.selector, "faultlined-selector", "app.kubernetes.io/name=faultlined", "label selector of the faultlined pods")
	f.IntVar(&k.port, "faultlined-port", gateway.DefaultFaultlinedPort, "faultlined's loopback port inside its pod")
}

func (k *kubeParams) server(logger *slog.Logger) (*gateway.Server, func(), error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if k.kubeconfig != "" {
		rules.ExplicitPath = k.kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: k.context}).ClientConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes configuration (give --kubeconfig, or --local for local mode): %w", err)
	}
	cfg.UserAgent = "faultline-gateway"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes client: %w", err)
	}
	tr := &gateway.PortForward{Config: cfg, Client: client, Namespace: k.namespace, Selector: k.selector, Port: k.port, Logger: logger}
	objects, err := kubefault.NewAPI(cfg, "gateway")
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes client: %w", err)
	}
	s := &gateway.Server{Source: &kube.Source{Client: client}, Transport: tr, Logger: logger, Objects: objects}
	return s, func() { tr.Close() }, nil
}
