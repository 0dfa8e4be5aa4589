#!/usr/bin/env bash
# build.sh DIR: builds kube-apiserver, kube-controller-manager, kube-scheduler,
# kubelet and kubectl into DIR unless they are already there. The e2e harness calls
# it with a directory keyed by the Kubernetes and Go versions, outside the
# repository (/var/cache/faultline by default), so a machine builds them once.
set -euo pipefail
out=${1:?usage: build.sh DIR}
cd "$(dirname "$0")"
version=v1.33.13
cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
missing=0
for c in "${cmds[@]}"; do [[ -x $out/$c ]] || missing=1; done
((missing)) || exit 0

mkdir -p "$out"
tmp=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=33"
	ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
pkgs=()
for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
echo "building Kubernetes $version components into $out (cold: 15-25 minutes on 2 cores)" >&2
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}"
for c in "${cmds[@]}"; do mv "$tmp/$c" "$out/$c"; done
