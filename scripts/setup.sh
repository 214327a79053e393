#!/usr/bin/env bash
# Creates ./.venv with swinssl installed in editable mode.
#   --web   adds the web app (trame-slicer and its VTK: about 1 GB; highdicom for DICOM SEG output)
#   --test  adds the test dependencies, the web app included (its browser tests need Debian's
#           chromium and chromium-headless-shell packages: .ci/run installs them)
# Where torch is missing it installs torch==2.13.0 first (a CPU build on the project machines),
# so that the `torch>=2.4` requirement does not pull a multi-GB CUDA build.
# The dependencies include openvino (the CPU inference backend of `swinssl segment`).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
extras=""
case "${1:-}" in
  --test) extras="[test,web]" ;;
  --web) extras="[web]" ;;
  "") ;;
  *) echo "usage: scripts/setup.sh [--web|--test]" >&2; exit 2 ;;
esac
if [ ! -x .venv/bin/python ]; then "$PYTHON" -m venv .venv; fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras}"
echo "swinssl installed in $(pwd)/.venv"
