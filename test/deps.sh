#!/usr/bin/env bash
# test/deps.sh GROUP...: installs the Debian packages a make target needs
# when they are missing, and nothing else. Groups: demo, test, bench.
#
# Each package is probed by a command or a file it provides, so a machine
# that has the tool from elsewhere is left alone. Packages are installed
# with --no-install-recommends: nothing may depend on a recommended
# package being there. If something cannot be installed, this stops at
# once with one line naming it.
set -euo pipefail

# package:probe; a probe starting with / is a file, otherwise a command.
demo=(containerd:containerd runc:runc iproute2:ip ca-certificates:/etc/ssl/certs/ca-certificates.crt)
test=("${demo[@]}"
	clang:clang llvm:llvm-strip libbpf-dev:/usr/include/bpf/bpf_helpers.h linux-libc-dev:/usr/include/linux/bpf.h
	protobuf-compiler:protoc libprotobuf-dev:/usr/include/google/protobuf/duration.proto
	etcd-server:etcd containernetworking-plugins:/usr/lib/cni/bridge
	gcc:gcc libc6-dev:/usr/include/stdio.h util-linux:setpriv
	python3-grpcio:/usr/lib/python3/dist-packages/grpc/__init__.py prometheus:prometheus
	redis-server:redis-server redis-tools:redis-cli postgresql:/usr/lib/postgresql/15/bin/postgres
	openssl:openssl curl:curl python3-urllib3:/usr/lib/python3/dist-packages/urllib3/__init__.py)
bench=(iproute2:ip wrk:wrk)

missing=()
for group in "$@"; do
	declare -n list="$group"
	for entry in "${list[@]}"; do
		pkg=${entry%%:*} probe=${entry#*:}
		if [[ $probe == /* ]]; then [[ -e $probe ]] && continue; else command -v "$probe" >/dev/null && continue; fi
		[[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
	done
done
((${#missing[@]})) || exit 0

if [[ $(id -u) != 0 ]]; then
	echo "deps: missing ${missing[*]}: run as root (the tests need it too), or: apt-get install --no-install-recommends ${missing[*]}" >&2
	exit 1
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if ! log=$( { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } 2>&1); then
	echo "deps: could not install ${missing[*]}: $(grep -E '^E:' <<<"$log" | head -n 1 || true)" >&2
	exit 1
fi
