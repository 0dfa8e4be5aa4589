// Package auth is the bearer token that guards faultline's TCP APIs: the
// gateway (faultline gateway, faultline run) and faultlined's optional TCP
// listener. Whoever can fault things must prove it: a local user who can
// reach a loopback port must not borrow the powers of the root or
// kubeconfig user who started the server.
//
// A token is 32 random bytes, base64url. A server keeps it in a file only
// its user can read; a client finds it, in order, in FAULTLINE_TOKEN, in
// the file FAULTLINE_TOKEN_FILE names, or in the user's default token file
// (DefaultFile), and sends it as "authorization: Bearer TOKEN" on every
// call. The standard health service stays open, for probes.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Environment variables clients read.
const (
	EnvToken     = "FAULTLINE_TOKEN"
	EnvTokenFile = "FAULTLINE_TOKEN_FILE"
)

// healthPrefix is the standard health service, which needs no token.
const healthPrefix = "/grpc.health.v1.Health/"

// NewToken returns a fresh random token.
func NewToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// DefaultFile is the user's gateway token file:
// $XDG_CONFIG_HOME/faultline/gateway-token, else
// ~/.config/faultline/gateway-token.
func DefaultFile() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("find the token file: %w", err)
	}
	return filepath.Join(dir, "faultline", "gateway-token"), nil
}

// ReadFile reads a token from path. A server's own file must be readable
// by its user alone (private); a client reads whatever it was given.
func ReadFile(path string, private bool) (string, error) {
	if private {
		st, err := os.Stat(path)
		if err != nil {
			return "", fmt.Errorf("token file: %w", err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			return "", fmt.Errorf("token file %s is readable by other users (mode %04o): chmod 600 %s", path, st.Mode().Perm(), path)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" || strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("token file %s does not hold a token (one line, no spaces)", path)
	}
	return tok, nil
}

// LoadOrCreate reads the token in path, or writes a new one there
// (mode 0600, its directory 0700) when there is none; created says which.
func LoadOrCreate(path string) (token string, created bool, err error) {
	token, err = ReadFile(path, true)
	if !errors.Is(err, fs.ErrNotExist) {
		return token, false, err
	}
	if token, err = NewToken(); err != nil {
		return "", false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", false, fmt.Errorf("token file: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) { // another server won the race: use its token
		token, err = ReadFile(path, true)
		return token, false, err
	}
	if err != nil {
		return "", false, fmt.Errorf("token file: %w", err)
	}
	_, err = f.WriteString(token + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return "", false, fmt.Errorf("write token file: %w", err)
	}
	return token, true, nil
}

// ClientToken finds the token a client sends: FAULTLINE_TOKEN, else the
// file FAULTLINE_TOKEN_FILE names, else DefaultFile if it exists; "" when
// there is none (the server then says where to get one).
func ClientToken() (string, error) {
	if tok := os.Getenv(EnvToken); tok != "" {
		return tok, nil
	}
	if path := os.Getenv(EnvTokenFile); path != "" {
		return ReadFile(path, false)
	}
	path, err := DefaultFile()
	if err != nil {
		return "", nil
	}
	tok, err := ReadFile(path, false)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	return tok, err
}

// Bearer returns per-call credentials that send token. They are allowed on
// plaintext connections: faultline's servers listen on loopback.
func Bearer(token string) credentials.PerRPCCredentials { return bearer(token) }

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

// Checker checks the token of every call but the health service's.
type Checker struct {
	token []byte
	// hint tells a caller without the right token where it comes from.
	hint string
}

// NewChecker returns a Checker for token; hint completes the message a
// caller without it gets, e.g. where the token file is.
func NewChecker(token, hint string) *Checker {
	return &Checker{token: []byte(token), hint: hint}
}

// ServerOptions are the interceptors to give grpc.NewServer.
func (c *Checker) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := c.check(ctx, info.FullMethod); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := c.check(ss.Context(), info.FullMethod); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	}
}

func (c *Checker) check(ctx context.Context, method string) error {
	if strings.HasPrefix(method, healthPrefix) {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return status.Errorf(codes.Unauthenticated, "no bearer token: send the header authorization: Bearer TOKEN; %s", c.hint)
	}
	got, ok := strings.CutPrefix(vals[0], "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(got), c.token) != 1 {
		return status.Errorf(codes.Unauthenticated, "wrong bearer token; %s", c.hint)
	}
	return nil
}
