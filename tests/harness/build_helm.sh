#!/usr/bin/env bash
# Build helm v3 into ${PA_CACHE_DIR}/bin/helm-<version>/helm.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

build_helm() {
  local out="$1"
  pa_go_env
  pa_require_gomod helm helm.sh/helm/v3 "${HELM_VERSION}"
  local work; work="$(pa_go_workdir helm)"
  local p=helm.sh/helm/v3/internal/version
  (cd "${work}" && "${GO_BIN}" build -trimpath \
    -ldflags="-s -w -X ${p}.version=${HELM_VERSION} -X ${p}.gitCommit=unknown-go-module-build -X ${p}.gitTreeState=clean" \
    -o "${out}/helm" helm.sh/helm/v3/cmd/helm)
  "${out}/helm" version --short
}

pa_build helm "${HELM_VERSION}" build_helm
