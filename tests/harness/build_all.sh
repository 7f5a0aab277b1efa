#!/usr/bin/env bash
# Build (or reuse from cache) every binary the e2e harness needs, printing how
# long each component took. Usage: tests/harness/build_all.sh [component...]
# Components: etcd kwok kubernetes helm keda (default: all, in that order).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "${HERE}/lib.sh"

components=("$@")
((${#components[@]})) || components=(etcd kwok kubernetes helm keda)

declare -A took
total_start=${SECONDS}
for c in "${components[@]}"; do
  [[ -f "${HERE}/build_${c}.sh" ]] || pa_die "unknown component '${c}'"
  start=${SECONDS}
  bash "${HERE}/build_${c}.sh"
  took[${c}]=$((SECONDS - start))
done

printf '\n%-12s %8s\n' component seconds
for c in "${components[@]}"; do
  printf '%-12s %8s\n' "${c}" "${took[${c}]}"
done
printf '%-12s %8s\n' total "$((SECONDS - total_start))"
printf 'binaries under %s\n' "${PA_BIN_ROOT}"
