package netnsdir

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/faultline-dev/faultline/pkg/targets"
)

// Resolve only lists the directory, so plain files stand in for the
// namespaces; test/local runs the source on real ones.
func source(t *testing.T, labels map[string]string) *Source {
	t.Helper()
	s := &Source{Dir: t.TempDir(), LabelsDir: t.TempDir()}
	for name, text := range labels {
		if err := os.WriteFile(filepath.Join(s.Dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if text != "" {
			if err := os.WriteFile(filepath.Join(s.LabelsDir, name), []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	return s
}

func TestLabels(t *testing.T) {
	s := source(t, map[string]string{
		"plain":   "",
		"catalog": "# the demo's catalog\nfaultline.namespace=demo\nfaultline.service = catalog\nfaultline.port=3333\napp=catalog\n",
		"renamed": "faultline.namespace=demo\nfaultline.name=catalog-2\nfaultline.service=catalog\n",
		"badport": "faultline.namespace=demo\nfaultline.service=catalog\nfaultline.port=http\n",
	})
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		set  targets.Set
		want []string // name@namespace:port
		skip string
	}{
		{"no label: namespace default, name the file", targets.Set{Pods: &targets.Selector{}}, []string{"plain@default:0"}, ""},
		{"faultline.namespace", targets.Set{Pods: &targets.Selector{Namespace: "demo", Select: map[string]string{"app": "catalog"}}}, []string{"catalog@demo:3333"}, ""},
		{"faultline.service, faultline.name, faultline.port", targets.Set{Service: &targets.Service{Name: "catalog", Namespace: "demo"}},
			[]string{"catalog@demo:3333", "catalog-2@demo:0"}, "badport"},
		{"faultline.netns", targets.Set{Pods: &targets.Selector{Namespace: "demo", Select: map[string]string{"faultline.netns": "renamed"}}}, []string{"catalog-2@demo:0"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := s.Resolve(ctx, tc.set)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, tg := range res.Targets {
				got = append(got, tg.Name+"@"+tg.Namespace+":"+strconv.Itoa(tg.Port))
				if filepath.Dir(tg.NetnsPath) != s.Dir {
					t.Errorf("%s: netns path %s", tg.Name, tg.NetnsPath)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("targets %v, want %v", got, tc.want)
			}
			if tc.skip != "" && (len(res.Skipped) != 1 || res.Skipped[0].Name != tc.skip ||
				res.Skipped[0].Reason != `label faultline.port="http" is not a port in 1-65535`) {
				t.Errorf("skipped %+v, want %s for its port label", res.Skipped, tc.skip)
			}
		})
	}
	// The port label is the port a fault uses when it names none.
	res, _ := s.Resolve(ctx, targets.Set{Service: &targets.Service{Name: "catalog", Namespace: "demo"}})
	if p, err := res.Targets[0].ResolvePort(0, "", 80); err != nil || p != 3333 {
		t.Errorf("default port: %d, %v; want 3333 from faultline.port", p, err)
	}
}

func TestAbsent(t *testing.T) {
	s := &Source{Dir: filepath.Join(t.TempDir(), "netns")}
	_, err := s.Resolve(context.Background(), targets.Set{Pods: &targets.Selector{}})
	if !errors.Is(err, targets.ErrAbsent) || err.Error() != "not on this machine: no such directory" {
		t.Errorf("no directory: %v, want ErrAbsent", err)
	}
}
