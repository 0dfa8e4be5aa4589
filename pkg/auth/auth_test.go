package auth

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
)

func TestLoadOrCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cfg", "faultline", "gateway-token")
	tok, created, err := LoadOrCreate(path)
	if err != nil || !created || len(tok) != 43 {
		t.Fatalf("first call: %q %v %v", tok, created, err)
	}
	st, _ := os.Stat(path)
	dir, _ := os.Stat(filepath.Dir(path))
	if st.Mode().Perm() != 0o600 || dir.Mode().Perm() != 0o700 {
		t.Errorf("modes %v %v, want 0600 and 0700", st.Mode(), dir.Mode())
	}
	again, created, err := LoadOrCreate(path)
	if err != nil || created || again != tok {
		t.Errorf("second call: %q %v %v, want the same token", again, created, err)
	}
	os.Chmod(path, 0o644)
	if _, _, err := LoadOrCreate(path); err == nil || !strings.Contains(err.Error(), "readable by other users") {
		t.Errorf("world-readable file: %v", err)
	}
}

func TestClientToken(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	t.Setenv(EnvToken, "")
	t.Setenv(EnvTokenFile, "")
	if tok, err := ClientToken(); tok != "" || err != nil {
		t.Errorf("nothing set: %q %v", tok, err)
	}
	def, _ := DefaultFile()
	want, _, err := LoadOrCreate(def)
	if err != nil {
		t.Fatal(err)
	}
	if tok, _ := ClientToken(); tok != want {
		t.Errorf("default file: %q, want %q", tok, want)
	}
	other := filepath.Join(dir, "other")
	os.WriteFile(other, []byte("from-file\n"), 0o644)
	t.Setenv(EnvTokenFile, other)
	if tok, _ := ClientToken(); tok != "from-file" {
		t.Errorf("FAULTLINE_TOKEN_FILE: %q", tok)
	}
	t.Setenv(EnvToken, "from-env")
	if tok, _ := ClientToken(); tok != "from-env" {
		t.Errorf("FAULTLINE_TOKEN: %q", tok)
	}
}

func TestChecker(t *testing.T) {
	g := grpc.NewServer(NewChecker("s3cret", "see where").ServerOptions()...)
	healthpb.RegisterHealthServer(g, health.NewServer())
	reflection.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	defer g.Stop()
	dial := func(opts ...grpc.DialOption) *grpc.ClientConn {
		cc, err := grpc.NewClient("passthrough:///"+ln.Addr().String(), append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	reflect := func(cc *grpc.ClientConn) error {
		s, err := rpb.NewServerReflectionClient(cc).ServerReflectionInfo(context.Background())
		if err != nil {
			return err
		}
		// A stream the server has already refused makes Send return io.EOF;
		// its status is what Recv then returns (grpc.ClientStream's contract).
		if err := s.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}); err != nil && err != io.EOF {
			return err
		}
		_, err = s.Recv()
		return err
	}
	for _, tc := range []struct {
		name string
		cc   *grpc.ClientConn
		want string // "" = allowed
	}{
		{"no token", dial(), "no bearer token: send the header authorization: Bearer TOKEN; see where"},
		{"wrong token", dial(grpc.WithPerRPCCredentials(Bearer("guess"))), "wrong bearer token; see where"},
		{"right token", dial(grpc.WithPerRPCCredentials(Bearer("s3cret"))), ""},
	} {
		err := reflect(tc.cc)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: reflection: %v", tc.name, err)
			}
		} else if st := status.Convert(err); st.Code() != codes.Unauthenticated || st.Message() != tc.want {
			t.Errorf("%s: reflection: %v, want Unauthenticated %q", tc.name, err, tc.want)
		}
		if _, err := healthpb.NewHealthClient(tc.cc).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Errorf("%s: health must stay open: %v", tc.name, err)
		}
	}
}
