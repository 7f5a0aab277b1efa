#!/usr/bin/env bash
# Build kwok (fake nodes/pods controller) into ${PA_CACHE_DIR}/bin/kwok-<version>/kwok.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

build_kwok() {
  local out="$1"
  pa_go_env
  pa_require_gomod kwok sigs.k8s.io/kwok "${KWOK_VERSION}"
  local work; work="$(pa_go_workdir kwok)"
  (cd "${work}" && "${GO_BIN}" build -trimpath \
    -ldflags="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" \
    -o "${out}/kwok" sigs.k8s.io/kwok/cmd/kwok)
  "${out}/kwok" --version
}

pa_build kwok "${KWOK_VERSION}" build_kwok
