# shellcheck shell=bash
# Shared helpers for the harness build scripts. Source it; do not execute it.
#
# Binaries are cached outside the repository in
#   ${PA_CACHE_DIR:-$HOME/.cache/predictive-autoscaler}/bin/<name>-<version>/
# A directory counts as built only once its .complete stamp exists, so an
# interrupted build is redone, and a finished one is never rebuilt.

HARNESS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "${HARNESS_DIR}/versions.env"

PA_CACHE_DIR="${PA_CACHE_DIR:-${HOME}/.cache/predictive-autoscaler}"
PA_BIN_ROOT="${PA_CACHE_DIR}/bin"

pa_log() { printf '[harness] %s\n' "$*" >&2; }
pa_die() { printf '[harness] ERROR: %s\n' "$*" >&2; exit 1; }

pa_find_go() {
  if [[ -n "${GO:-}" ]]; then printf '%s\n' "${GO}"; return; fi
  if command -v go >/dev/null 2>&1; then command -v go; return; fi
  if [[ -x /usr/local/go/bin/go ]]; then printf '%s\n' /usr/local/go/bin/go; return; fi
  pa_die "no Go toolchain found (set GO=/path/to/go or put go on PATH)"
}

# Go environment for all builds. Module and build caches live under
# PA_CACHE_DIR unless the caller overrides them, so the harness never writes
# into the repository and a CI cache of PA_CACHE_DIR covers everything.
pa_go_env() {
  GO_BIN="$(pa_find_go)"
  export GOMODCACHE="${PA_GOMODCACHE:-${PA_CACHE_DIR}/go/mod}"
  export GOCACHE="${PA_GOCACHE:-${PA_CACHE_DIR}/go/build}"
  export CGO_ENABLED=0
  export GOFLAGS="-mod=mod -buildvcs=false"
  export GOTOOLCHAIN=local
  mkdir -p "${GOMODCACHE}" "${GOCACHE}"
}

pa_bin_dir() { printf '%s/%s-%s\n' "${PA_BIN_ROOT}" "$1" "$2"; }

# pa_build NAME VERSION BUILD_FUNCTION
# Runs BUILD_FUNCTION <staging-dir> unless NAME-VERSION is already cached.
# The function must write its binaries into the staging dir; on success the
# staging dir is renamed into place, so a cache entry is all-or-nothing.
pa_build() {
  local name="$1" version="$2" fn="$3"
  local dest; dest="$(pa_bin_dir "${name}" "${version}")"
  mkdir -p "${PA_BIN_ROOT}"
  # Serialise concurrent builds of the same component (parallel CI jobs,
  # pytest-xdist workers, ...).
  local lock="${PA_BIN_ROOT}/.${name}-${version}.lock"
  exec {lock_fd}>"${lock}"
  flock "${lock_fd}"
  if [[ -f "${dest}/.complete" ]]; then
    pa_log "${name} ${version}: cached in ${dest}"
    flock -u "${lock_fd}"; exec {lock_fd}>&-
    return 0
  fi
  local stage; stage="$(mktemp -d "${PA_BIN_ROOT}/.${name}-${version}.XXXXXX")"
  chmod 755 "${stage}"
  pa_log "${name} ${version}: building into ${dest}"
  local start=${SECONDS}
  # Not `if ! fn`: errexit is ignored inside a function called as an `if`
  # condition, so a failing step would not stop the build function.
  local rc=0
  set +e
  ( set -e; "${fn}" "${stage}" )
  rc=$?
  set -e
  if ((rc != 0)); then
    rm -rf "${stage}"
    flock -u "${lock_fd}"; exec {lock_fd}>&-
    pa_die "${name} ${version}: build failed"
  fi
  date -u +%Y-%m-%dT%H:%M:%SZ > "${stage}/.complete"
  rm -rf "${dest}"
  mv "${stage}" "${dest}"
  pa_log "${name} ${version}: built in $((SECONDS - start))s"
  flock -u "${lock_fd}"; exec {lock_fd}>&-
}

# pa_go_workdir NAME: copy our go.mod/go.sum for NAME into a scratch module
# directory under PA_CACHE_DIR (with -mod=mod Go may add go.sum lines; doing
# that in a copy keeps the checkout clean) and print its path.
pa_go_workdir() {
  local name="$1"
  local src="${HARNESS_DIR}/go/${name}"
  [[ -f "${src}/go.mod" ]] || pa_die "missing ${src}/go.mod (run tests/harness/update_gomods.sh)"
  local work="${PA_CACHE_DIR}/work/${name}"
  rm -rf "${work}"
  mkdir -p "${work}"
  cp "${src}/go.mod" "${work}/go.mod"
  if [[ -f "${src}/go.sum" ]]; then cp "${src}/go.sum" "${work}/go.sum"; fi
  printf '%s\n' "${work}"
}

# pa_require_gomod NAME MODULE VERSION: fail loudly if our go.mod for NAME does
# not pin MODULE at VERSION (versions.env changed without update_gomods.sh).
pa_require_gomod() {
  local name="$1" module="$2" version="$3"
  local gomod="${HARNESS_DIR}/go/${name}/go.mod"
  if ! grep -Eq "^[[:space:]]*(require[[:space:]]+)?${module//./\\.}[[:space:]]+${version//./\\.}([[:space:]]|$)" "${gomod}"; then
    pa_die "${gomod} does not require ${module} ${version}; run tests/harness/update_gomods.sh"
  fi
}
