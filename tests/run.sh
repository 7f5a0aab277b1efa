#!/usr/bin/env bash
# The one test command: sets up everything on a fresh Debian machine, then runs the
# static checks and the whole test suite (unit, integration on a real Prometheus and
# KEDA's own proto, end-to-end on a real control plane built from Go modules).
#
#   bash tests/run.sh            # everything
#   bash tests/run.sh -k spec    # extra arguments go to pytest
#
# Heavy Go builds are cached outside the repo (PA_CACHE_DIR, default
# ~/.cache/predictive-autoscaler), keyed by version, so a warm run only runs tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
started=${SECONDS}
step() { printf '\n==> %s (%ss)\n' "$*" "$((SECONDS - started))"; }

step "system packages"
missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
command -v openssl >/dev/null || missing+=(openssl)
if ((${#missing[@]})); then
  sudo_cmd=(); [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian's postinst may start a system Prometheus on :9090; tests start their own.
  "${sudo_cmd[@]}" pkill -x prometheus 2>/dev/null || true
fi

step "python environment"
[[ -x .venv/bin/python ]] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c tests/constraints.txt -e '.[dev,test]'
.venv/bin/python -m autoscaler.protogen

step "Go-built components (cached in ${PA_CACHE_DIR:-$HOME/.cache/predictive-autoscaler})"
nice -n 5 bash tests/harness/build_all.sh

step "static checks"
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/lint-imports

step "tests"
.venv/bin/python -m pytest -p no:cacheprovider "$@"
step "done"
