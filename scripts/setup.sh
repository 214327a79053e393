#!/usr/bin/env bash
# Creates ./.venv with swinssl installed in editable mode; `--test` adds the test dependencies.
# Where torch is missing it installs torch==2.13.0 first (a CPU build on the project machines),
# so that the `torch>=2.4` requirement does not pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
extras=""
if [ "${1:-}" = "--test" ]; then extras="[test]"; fi
if [ ! -x .venv/bin/python ]; then "$PYTHON" -m venv .venv; fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras}"
echo "swinssl installed in $(pwd)/.venv"
