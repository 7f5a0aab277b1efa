#!/usr/bin/env bash
# Build (or reuse from cache) the benchmarks' gRPC load generator, tests/bench/go/loadgen,
# and print the binary's path. Cached like the harness binaries, keyed by a hash of its
# sources, so an edit rebuilds it. Usage: bash tests/bench/build_loadgen.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "${HERE}/../harness/lib.sh"
SOURCES="${HERE}/go/loadgen"
version="$(cat "${SOURCES}/go.mod" "${SOURCES}/go.sum" "${SOURCES}/main.go" | sha256sum | cut -c1-12)"

build_loadgen() {
  local stage="$1" work="${PA_CACHE_DIR}/work/loadgen"
  pa_go_env
  rm -rf "${work}" && mkdir -p "${work}"
  cp "${SOURCES}/go.mod" "${SOURCES}/go.sum" "${SOURCES}/main.go" "${work}/"
  (cd "${work}" && "${GO_BIN}" build -trimpath -o "${stage}/loadgen" .)
}

pa_build loadgen "${version}" build_loadgen
printf '%s/loadgen\n' "$(pa_bin_dir loadgen "${version}")"
