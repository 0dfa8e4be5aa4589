package k6model

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/bufbuild/protocompile"
	"github.com/grafana/sobek"
	"github.com/jhump/protoreflect/grpcreflect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// statusNames are k6/net/grpc's status constants.
var statusNames = []string{"StatusOK", "StatusCanceled", "StatusUnknown", "StatusInvalidArgument", "StatusDeadlineExceeded",
	"StatusNotFound", "StatusAlreadyExists", "StatusPermissionDenied", "StatusResourceExhausted", "StatusFailedPrecondition",
	"StatusAborted", "StatusOutOfRange", "StatusUnimplemented", "StatusInternal", "StatusUnavailable", "StatusDataLoss",
	"StatusUnauthenticated"}

// grpcClient is one grpc.Client of a script.
type grpcClient struct {
	vu      *VU
	conn    *grpc.ClientConn
	methods map[string]protoreflect.MethodDescriptor // "pkg.Service/Method"
}

func (vu *VU) grpcModule() *sobek.Object {
	m := vu.rt.NewObject()
	for code, name := range statusNames {
		m.Set(name, code)
	}
	m.Set("Client", func(call sobek.ConstructorCall) *sobek.Object {
		c := &grpcClient{vu: vu, methods: map[string]protoreflect.MethodDescriptor{}}
		obj := call.This
		obj.Set("load", c.load)
		obj.Set("connect", c.connect)
		obj.Set("invoke", c.invoke)
		obj.Set("close", c.close)
		return nil
	})
	return m
}

// load parses proto files; k6 allows it only in the init context.
func (c *grpcClient) load(importPaths []string, files ...string) {
	if !c.vu.inInit {
		c.vu.throw("load must be called in the init context")
	}
	compiler := protocompile.Compiler{
		Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{ImportPaths: importPaths}),
	}
	fds, err := compiler.Compile(c.vu.ctx, files...)
	if err != nil {
		c.vu.throw("%v", err)
	}
	for _, fd := range fds {
		sds := fd.Services()
		for i := 0; i < sds.Len(); i++ {
			c.addService(sds.Get(i))
		}
	}
}

func (c *grpcClient) addService(sd protoreflect.ServiceDescriptor) {
	ms := sd.Methods()
	for i := 0; i < ms.Len(); i++ {
		c.methods[string(sd.FullName())+"/"+string(ms.Get(i).Name())] = ms.Get(i)
	}
}

var connectParams = map[string]bool{"plaintext": true, "reflect": true, "reflectMetadata": true, "timeout": true,
	"tls": true, "maxReceiveSize": true, "maxSendSize": true, "authority": true}

// connect dials the server, blocking until it is ready or timeout (60s
// by default); with reflect it resolves every service by server
// reflection. k6 allows it only in the VU context.
func (c *grpcClient) connect(addr string, params map[string]any) bool {
	if c.vu.inInit {
		c.vu.throw("connecting to a gRPC server in the init context is not supported")
	}
	for k := range params {
		if !connectParams[k] {
			c.vu.throw("unknown connect param: %q", k)
		}
	}
	timeout := 60 * time.Second
	if t, ok := params["timeout"]; ok {
		timeout = msOrDuration(c.vu, t)
	}
	creds := credentials.NewClientTLSFromCert(nil, "")
	if p, _ := params["plaintext"].(bool); p {
		creds = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return c.vu.model.dial(ctx, "tcp", a) }))
	if err != nil {
		c.vu.throw("%v", err)
	}
	ctx, cancel := context.WithTimeout(c.vu.ctx, timeout)
	defer cancel()
	conn.Connect()
	for s := conn.GetState(); s != connectivity.Ready; s = conn.GetState() {
		if !conn.WaitForStateChange(ctx, s) {
			conn.Close()
			c.vu.throw("failed to connect to %s: %v", addr, ctx.Err())
		}
	}
	if r, _ := params["reflect"].(bool); r {
		rctx := ctx
		if md, ok := params["reflectMetadata"].(map[string]any); ok {
			rctx = metadata.NewOutgoingContext(ctx, toMD(md))
		}
		rc := grpcreflect.NewClientAuto(rctx, conn)
		services, err := rc.ListServices()
		if err != nil {
			conn.Close()
			c.vu.throw("can't list services through reflection: %v", err)
		}
		for _, s := range services {
			sd, err := rc.ResolveService(s)
			if err != nil {
				continue
			}
			c.addService(sd.UnwrapService())
		}
		rc.Reset()
	}
	c.conn = conn
	c.vu.mu.Lock()
	c.vu.closers = append(c.vu.closers, func() { conn.Close() })
	c.vu.mu.Unlock()
	return true
}

var invokeParams = map[string]bool{"metadata": true, "tags": true, "timeout": true, "discardResponseMessage": true}

// invoke makes a unary call, blocking the VU until it returns.
func (c *grpcClient) invoke(method string, req sobek.Value, params map[string]any) *sobek.Object {
	vu := c.vu
	if vu.inInit {
		vu.throw("invoking RPC methods in the init context is not supported")
	}
	if c.conn == nil {
		vu.throw("no gRPC connection, you must call connect first")
	}
	for k := range params {
		if !invokeParams[k] {
			vu.throw("unknown param: %q", k)
		}
	}
	method = strings.TrimPrefix(method, "/")
	md, ok := c.methods[method]
	if !ok {
		vu.throw("method %q not found in file descriptors", "/"+method)
	}
	timeout := 60 * time.Second
	if t, ok := params["timeout"]; ok {
		timeout = msOrDuration(vu, t)
	}
	in := dynamicpb.NewMessage(md.Input())
	b, err := json.Marshal(req.Export())
	if err != nil {
		vu.throw("unable to serialise request object: %v", err)
	}
	if err := protojson.Unmarshal(b, in); err != nil {
		vu.throw("unable to serialise request object to protocol buffer: %v", err)
	}
	ctx, cancel := context.WithTimeout(vu.ctx, timeout)
	defer cancel()
	if m, ok := params["metadata"].(map[string]any); ok {
		ctx = metadata.NewOutgoingContext(ctx, toMD(m))
	}
	out := dynamicpb.NewMessage(md.Output())
	var header, trailer metadata.MD
	err = c.conn.Invoke(ctx, "/"+method, in, out, grpc.Header(&header), grpc.Trailer(&trailer))

	res := vu.rt.NewObject()
	res.Set("headers", mdObject(header))
	res.Set("trailers", mdObject(trailer))
	st, _ := status.FromError(err)
	res.Set("status", int(st.Code()))
	if err != nil {
		e := map[string]any{"code": int(st.Code()), "message": st.Message(), "details": []any{}}
		res.Set("error", e)
		res.Set("message", nil)
		return res
	}
	res.Set("error", nil)
	raw, err := protojson.Marshal(out)
	if err != nil {
		vu.throw("unable to serialise response: %v", err)
	}
	var msg any
	if err := json.Unmarshal(raw, &msg); err != nil {
		vu.throw("%v", err)
	}
	res.Set("message", msg)
	return res
}

func (c *grpcClient) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

func toMD(m map[string]any) metadata.MD {
	md := metadata.MD{}
	for k, v := range m {
		md.Append(k, toString(v))
	}
	return md
}

func mdObject(md metadata.MD) map[string]any {
	out := map[string]any{}
	for k, vs := range md {
		out[k] = vs
	}
	return out
}

// msOrDuration reads a k6 timeout: a duration string or milliseconds.
func msOrDuration(vu *VU, v any) time.Duration {
	switch t := v.(type) {
	case string:
		d, err := time.ParseDuration(t)
		if err != nil {
			vu.throw("invalid timeout %q: %v", t, err)
		}
		return d
	case int64:
		return time.Duration(t) * time.Millisecond
	case float64:
		return time.Duration(t * float64(time.Millisecond))
	}
	vu.throw("invalid timeout %v", v)
	return 0
}

func toString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	}
	return fmt.Sprint(v)
}

func itoa(i int) string { return strconv.Itoa(i) }
