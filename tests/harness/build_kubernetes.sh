#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager and kube-scheduler from the
# k8s.io/kubernetes Go module (pinned in versions.env) into
#   ${PA_CACHE_DIR:-~/.cache/predictive-autoscaler}/bin/kubernetes-<version>/
# A second run with the same version is a no-op.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

build_kubernetes() {
  local out="$1"
  pa_go_env
  pa_require_gomod kubernetes k8s.io/kubernetes "${KUBE_VERSION}"
  grep -q "k8s.io/api => k8s.io/api ${KUBE_STAGING_VERSION}" "${HARNESS_DIR}/go/kubernetes/go.mod" \
    || pa_die "go/kubernetes/go.mod staging replaces are not ${KUBE_STAGING_VERSION}; run update_gomods.sh"
  local work; work="$(pa_go_workdir kubernetes)"
  local v="${KUBE_VERSION}" major minor
  major="$(sed -E 's/^v([0-9]+)\..*/\1/' <<<"${v}")"
  minor="$(sed -E 's/^v[0-9]+\.([0-9]+)\..*/\1/' <<<"${v}")"
  # The same variables hack/lib/version.sh sets in an upstream release build.
  local ldflags="-s -w"
  local pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X ${pkg}.gitVersion=${v}"
    ldflags+=" -X ${pkg}.gitMajor=${major}"
    ldflags+=" -X ${pkg}.gitMinor=${minor}"
    ldflags+=" -X ${pkg}.gitCommit=unknown-go-module-build"
    ldflags+=" -X ${pkg}.gitTreeState=clean"
    ldflags+=" -X ${pkg}.buildDate=${KUBE_BUILD_DATE}"
  done
  (cd "${work}" && "${GO_BIN}" build -trimpath -ldflags="${ldflags}" -o "${out}/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler)
  "${out}/kube-apiserver" --version
}

pa_build kubernetes "${KUBE_VERSION}" build_kubernetes
