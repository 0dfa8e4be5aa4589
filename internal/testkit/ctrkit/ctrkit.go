// Package ctrkit runs real containers for faultline's tests and demo: a
// private containerd daemon, images built from Go packages without any
// registry (go-containerregistry writes a docker archive that containerd
// imports), and containers joined to network namespaces made by the
// caller.
package ctrkit

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Daemon is a private containerd.
type Daemon struct {
	Dir    string
	Socket string
	cmd    *exec.Cmd
	log    *os.File
}

// StartContainerd starts containerd with its state and sockets under dir
// (keep dir short: unix socket paths are limited to 108 bytes) and its root
// (images, snapshots) under root, or dir/root when root is empty. The CRI
// plugin is off. containerd runs in a process group of its own, so a
// terminal's Ctrl-C reaches only the caller, which stops it in order.
func StartContainerd(ctx context.Context, dir, root string) (*Daemon, error) {
	return StartContainerdCRI(ctx, dir, root, "")
}

// StartContainerdCRI is StartContainerd with the CRI plugin on when cri,
// the plugin's TOML table body ([plugins."io.containerd.grpc.v1.cri"]
// and its sub-tables), is not empty.
func StartContainerdCRI(ctx context.Context, dir, root, cri string) (*Daemon, error) {
	if root == "" {
		root = filepath.Join(dir, "root")
	}
	d := &Daemon{Dir: dir, Socket: filepath.Join(dir, "containerd.sock")}
	disabled := `disabled_plugins = ["io.containerd.grpc.v1.cri"]`
	if cri != "" {
		disabled = ""
	}
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
%s
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = %q
`, root, filepath.Join(dir, "state"), disabled, d.Socket, d.Socket+".ttrpc", filepath.Join(dir, "debug.sock")) + cri
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		return nil, err
	}
	log, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		return nil, err
	}
	d.log = log
	d.cmd = exec.Command("containerd", "--config", cfg)
	d.cmd.Stdout, d.cmd.Stderr = log, log
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start containerd (apt-get install containerd runc): %w", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if c, err := containerd.New(d.Socket, containerd.WithTimeout(time.Second)); err == nil {
			ok, err := c.IsServing(ctx)
			c.Close()
			if ok && err == nil {
				return d, nil
			}
		}
		if time.Now().After(deadline) {
			d.Stop()
			out, _ := os.ReadFile(log.Name())
			return nil, fmt.Errorf("containerd did not come up; its log:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// PID returns the daemon's process ID.
func (d *Daemon) PID() int { return d.cmd.Process.Pid }

// Client connects to the daemon.
func (d *Daemon) Client() (*containerd.Client, error) {
	return containerd.New(d.Socket, containerd.WithTimeout(3*time.Second))
}

// Stop stops the daemon (SIGTERM, then SIGKILL after 5s).
func (d *Daemon) Stop() {
	if d.cmd != nil && d.cmd.Process != nil {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { d.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = d.cmd.Process.Kill()
			<-done
		}
	}
	if d.log != nil {
		d.log.Close()
	}
}

// GoBuild builds a static binary of pkg (a path or an import path), with
// extra go build flags if given.
func GoBuild(ctx context.Context, pkg, out string, flags ...string) error {
	args := append([]string{"build", "-trimpath"}, flags...)
	cmd := exec.CommandContext(ctx, "go", append(args, "-o", out, pkg)...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// BuildImage makes an image holding binary as /app, its entrypoint, and
// imports and unpacks it into the containerd namespace of ctx.
func BuildImage(ctx context.Context, client *containerd.Client, ref, binary string) (containerd.Image, error) {
	return BuildImageAt(ctx, client, ref, binary, "app")
}

// BuildImageAt is BuildImage with the binary at /file.
func BuildImageAt(ctx context.Context, client *containerd.Client, ref, binary, file string) (containerd.Image, error) {
	bin, err := os.ReadFile(binary)
	if err != nil {
		return nil, err
	}
	var layerTar bytes.Buffer
	tw := tar.NewWriter(&layerTar)
	for _, e := range []struct {
		name string
		mode int64
		data []byte
		dir  bool
	}{
		{name: "tmp/", mode: 0o1777, dir: true},
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/:/" + file + "\n")},
		{name: file, mode: 0o755, data: bin},
	} {
		h := &tar.Header{Name: e.name, Mode: e.mode, Size: int64(len(e.data)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
		if e.dir {
			h.Typeflag = tar.TypeDir
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar.Bytes())), nil
	})
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy() // keeps the layer's diff ID
	cfg.Architecture, cfg.OS = runtime.GOARCH, "linux"
	cfg.Config = v1.Config{Entrypoint: []string{"/" + file}, Env: []string{"PATH=/"}}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return nil, err
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		return nil, err
	}
	var archive bytes.Buffer
	if err := tarball.Write(tag, img, &archive); err != nil {
		return nil, fmt.Errorf("write image %s: %w", ref, err)
	}
	imgs, err := client.Import(ctx, &archive)
	if err != nil {
		return nil, fmt.Errorf("import image %s: %w", ref, err)
	}
	if len(imgs) == 0 {
		return nil, errors.New("import: no image")
	}
	image := containerd.NewImage(client, imgs[0])
	if err := image.Unpack(ctx, ""); err != nil {
		return nil, fmt.Errorf("unpack image %s: %w", ref, err)
	}
	return image, nil
}

// Spec describes a container to run.
type Spec struct {
	ID        string
	Image     containerd.Image
	Labels    map[string]string
	Env       []string
	NetnsPath string // the network namespace to join
	LogPath   string // stdout and stderr; discarded when empty
}

// Run creates and starts a container in the containerd namespace of ctx.
func Run(ctx context.Context, client *containerd.Client, s Spec) (containerd.Container, error) {
	opts := []oci.SpecOpts{oci.WithImageConfig(s.Image), oci.WithHostname(s.ID), oci.WithEnv(s.Env)}
	if s.NetnsPath != "" {
		opts = append(opts, oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: s.NetnsPath}))
	}
	c, err := client.NewContainer(ctx, s.ID,
		containerd.WithImage(s.Image),
		containerd.WithNewSnapshot(s.ID+"-rootfs", s.Image),
		containerd.WithContainerLabels(s.Labels),
		containerd.WithNewSpec(opts...))
	if err != nil {
		return nil, fmt.Errorf("create container %s: %w", s.ID, err)
	}
	creator := cio.NullIO
	if s.LogPath != "" {
		creator = cio.LogFile(s.LogPath)
	}
	task, err := c.NewTask(ctx, creator)
	if err != nil {
		Remove(ctx, c)
		return nil, fmt.Errorf("create task %s: %w", s.ID, err)
	}
	if err := task.Start(ctx); err != nil {
		Remove(ctx, c)
		return nil, fmt.Errorf("start %s: %w", s.ID, err)
	}
	return c, nil
}

// Remove kills the container's task, if any, and deletes it with its
// snapshot.
func Remove(ctx context.Context, c containerd.Container) error {
	if task, err := c.Task(ctx, nil); err == nil {
		if exited, err := task.Wait(ctx); err == nil {
			if task.Kill(ctx, syscall.SIGKILL) == nil {
				select {
				case <-exited:
				case <-time.After(5 * time.Second):
				}
			}
		}
		_, _ = task.Delete(ctx, containerd.WithProcessKill)
	}
	return c.Delete(ctx, containerd.WithSnapshotCleanup)
}

// WithNamespace returns ctx in the containerd namespace ns.
func WithNamespace(ctx context.Context, ns string) context.Context {
	return namespaces.WithNamespace(ctx, ns)
}
