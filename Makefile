# faultline: see README.md. Tests need root (real namespaces and eBPF).
export PATH := /usr/local/go/bin:$(PATH)
GO        ?= go
CLANG     ?= clang
MULTIARCH := $(shell gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
export BPF_INCLUDE := /usr/include/$(MULTIARCH)

.PHONY: all build generate verify-generated test test-deps e2e bench bench-deps lint test-clean clean demo demo-up demo-down demo-deps

all: build

build:
	$(GO) build -o bin/ ./cmd/faultlined ./cmd/faultline

# The demo: a dependency-timeout incident on this machine (root; see README).
demo: demo-deps build
	$(GO) build -o bin/demo ./examples/demo
	bin/demo run

demo-up: demo-deps build
	$(GO) build -o bin/demo ./examples/demo
	bin/demo up

demo-down:
	$(GO) build -o bin/demo ./examples/demo
	bin/demo down

# Debian packages, installed when missing (test/deps.sh says which).
demo-deps:
	@test/deps.sh demo

test-deps:
	@test/deps.sh test

bench-deps:
	@test/deps.sh bench

# Rebuilds the committed bpf2go objects (clang, libbpf-dev) and protobuf Go
# (protoc; the Go plugins are tool dependencies in go.mod).
generate:
	PATH="$$(dirname $$(command -v $(CLANG))):$$PATH" $(GO) generate ./pkg/steer/... ./pkg/netfault/... ./proto/... ./pkg/kubefault/...

# Fails when the committed generated code differs from what the sources
# give; skipped (with a note) where clang or protoc is missing.
verify-generated:
	@if command -v $(CLANG) >/dev/null && command -v protoc >/dev/null; then \
		$(MAKE) --no-print-directory generate >/dev/null && \
		git diff --exit-code --stat -- pkg/steer pkg/netfault proto deploy/crd.yaml || { echo "generated code is stale: run make generate and commit"; exit 1; }; \
	else echo "verify-generated: clang or protoc missing, skipped"; fi

# Privileged tests run as root; outside CI they skip when not root. Then
# 30 s of differential fuzzing of the HTTP/1 framing against net/http; the
# Kubernetes end-to-end test runs last.
test: test-deps lint verify-generated
	$(GO) test -race -p 1 -count=1 -timeout 30m ./...
	$(GO) test -run='^$$' -fuzz=FuzzFramingAgainstNetHTTP -fuzztime=30s ./pkg/proxy/httpfault/
	@$(MAKE) --no-print-directory test-clean
	@$(MAKE) --no-print-directory e2e

# The Kubernetes end-to-end test (root): a real single-node cluster on this
# machine, torn down at the end. The first run on a machine builds the
# Kubernetes binaries into $$FAULTLINE_CACHE (default /var/cache/faultline;
# about 20 minutes on 2 cores); after that it takes about 3 minutes.
e2e: test-deps
	cd test/e2e && $(GO) test -tags e2e -count=1 -v -timeout 45m .

bench: bench-deps
	FAULTLINE_BENCH=1 $(GO) test -count=1 -run TestBenchTable -v ./test/bench/ | grep -v '^\(=== \|--- \)'

# The CLI builds for a laptop (its Kubernetes gateway needs no eBPF), and
# everything for arm64 nodes.
lint:
	$(GO) vet ./...
	$(GO) vet -tags e2e ./test/e2e/
	GOOS=darwin GOARCH=arm64 $(GO) build -o /dev/null ./cmd/faultline
	GOOS=linux GOARCH=arm64 $(GO) build -o /dev/null ./...
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Removes namespaces left by a test binary that was killed (they all carry
# the fl-test- prefix).
test-clean:
	@for ns in $$(ip netns list 2>/dev/null | awk '/^fl-test-/ {print $$1}'); do ip netns del $$ns; done

clean:
	rm -rf bin/
