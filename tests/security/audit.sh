#!/usr/bin/env bash
# Audit the pinned dependencies (tests/constraints.txt) with pip-audit (PyPI's advisory data).
#
#   bash tests/security/audit.sh
#
# Fails on any known vulnerability that pip-audit-allowlist.txt does not explain, and
# (--strict) on any package it could not audit: a package skipped is not a clean one.
# Needs network access to PyPI; the pytest suite checks the pins and the allow-list offline.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
allowlist=tests/security/pip-audit-allowlist.txt
ignores=()
while read -r id reason; do
  [[ -z "${id}" || "${id}" == \#* ]] && continue
  if [[ -z "${reason}" ]]; then
    echo "audit: ${allowlist}: ${id} has no explanation" >&2
    exit 2
  fi
  ignores+=(--ignore-vuln "${id}")
done < "${allowlist}"
.venv/bin/python -m pip_audit --version >/dev/null 2>&1 || .venv/bin/python -m pip install -q "pip-audit>=2.10,<3"
exec .venv/bin/python -m pip_audit --requirement tests/constraints.txt --no-deps --disable-pip --strict \
  --progress-spinner off --desc on "${ignores[@]}"
