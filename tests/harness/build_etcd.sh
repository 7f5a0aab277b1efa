#!/usr/bin/env bash
# Build etcd from the go.etcd.io/etcd/server/v3 module (its root package is
# the etcd main) into ${PA_CACHE_DIR}/bin/etcd-<version>/etcd.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

build_etcd() {
  local out="$1"
  pa_go_env
  pa_require_gomod etcd go.etcd.io/etcd/server/v3 "${ETCD_VERSION}"
  local work; work="$(pa_go_workdir etcd)"
  (cd "${work}" && "${GO_BIN}" build -trimpath \
    -ldflags="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=go-module-build" \
    -o "${out}/etcd" go.etcd.io/etcd/server/v3)
  "${out}/etcd" --version
}

pa_build etcd "${ETCD_VERSION}" build_etcd
