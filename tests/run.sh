#!/usr/bin/env bash
# Build the package once, install it into a training environment (onnxruntime-training) and a deployment
# environment (stock onnxruntime only; the two cannot share one), and run the suite in both.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

"$PYTHON" -m venv .venv-build
.venv-build/bin/pip install -q --upgrade pip
rm -rf dist
.venv-build/bin/pip wheel -q --no-deps -w dist .
wheel=$(ls dist/inq_onnx-*.whl)

for env in train runtime; do
  "$PYTHON" -m venv ".venv-$env"
  ".venv-$env/bin/pip" install -q --upgrade pip
  ".venv-$env/bin/pip" install -q --force-reinstall "${wheel}[$env,test]"
done

artifacts=$(mktemp -d)
trap 'rm -rf "$artifacts"' EXIT
export INQ_TEST_ARTIFACTS=$artifacts
echo "== training environment (onnxruntime-training $(.venv-train/bin/python -c 'import onnxruntime as o; print(o.__version__)'))"
.venv-train/bin/pytest -q "$@"
echo "== deployment environment (onnxruntime $(.venv-runtime/bin/python -c 'import onnxruntime as o; print(o.__version__)'))"
.venv-runtime/bin/pytest -q "$@"
