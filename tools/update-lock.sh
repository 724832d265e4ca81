#!/usr/bin/env bash
# Re-resolve requirements.lock: the exact versions of every runtime and test dependency that
# CI installs (`pip install -c requirements.lock -e ".[test]"`).
#
# Run it in a virtual environment with pip-tools installed (`pip install pip-tools`), after
# changing a dependency in pyproject.toml, then run the test suite against the new lock
# before committing it. pip-compile uses pip's own resolver and configuration, so the CPU
# build of torch that pip finds on this machine is what it pins; the local version tag
# (`+cpu`) is dropped so that the same lock also selects a CPU wheel elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
pip-compile --quiet --extra test --strip-extras --no-emit-index-url --no-emit-find-links \
    --no-header --output-file requirements.lock pyproject.toml
sed -i -E 's/^(torch==[0-9.]+)\+[A-Za-z0-9.]+$/\1/' requirements.lock
{
    echo "# Exact versions CI tests with. Regenerate with tools/update-lock.sh; do not edit by hand."
    cat requirements.lock
} > requirements.lock.tmp && mv requirements.lock.tmp requirements.lock
grep -q '^torch==2\.13\.0$' requirements.lock || { echo "torch is not pinned to 2.13.0" >&2; exit 1; }
