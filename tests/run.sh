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
  ".venv-$env/bin/pip" install -q --force-reinstall "${wheel}[$env,test,report]"
done

# The native kernel tests (every ISA path this CPU has, integer paths bit-exact against a scalar reference),
# built with AddressSanitizer + UndefinedBehaviorSanitizer, with the headers the wheel build fetched.
headers=$(dirname "$(ls build/*/_deps/ort-headers/onnxruntime_c_api.h | head -1)")
cmake -S custom_ops -B build/native-sanitized -DINQ_BUILD_TESTS=ON -DINQ_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug \
  -DORT_INCLUDE_DIR="$headers" > /dev/null
native_tests=(inq_kernel_tests inq_qkernel_tests inq_code_gemv_tests)
cmake --build build/native-sanitized -j2 --target "${native_tests[@]}" > /dev/null
echo "== native kernel tests (ASan + UBSan)"
for t in "${native_tests[@]}"; do build/native-sanitized/"$t" | tail -1; done

artifacts=$(mktemp -d)
corpus=$(mktemp -d)
trap 'rm -rf "$artifacts" "$corpus"' EXIT
export INQ_TEST_ARTIFACTS=$artifacts

# Real exported models for tests/test_real_exports.py: digits classifiers trained in PyTorch, TensorFlow, Paddle
# and scikit-learn and exported by their own converters (opsets 9..17), in a venv of their own: the exporters pin
# onnx, numpy and protobuf versions that the two environments above cannot share.
# A corpus already named in INQ_TEST_EXPORTS is used as it is.
if [ -z "${INQ_TEST_EXPORTS:-}" ]; then
  start=$SECONDS
  "$PYTHON" -m venv .venv-export
  .venv-export/bin/pip install -q --upgrade pip
  .venv-export/bin/pip install -q -r tests/exports/requirements.txt
  installed=$SECONDS
  echo "== real-export corpus (exporters installed in $((installed - start)) s)"
  .venv-export/bin/python tests/exports/make_models.py "$corpus"
  echo "   exported in $((SECONDS - installed)) s"
  export INQ_TEST_EXPORTS=$corpus
fi
echo "== training environment (onnxruntime-training $(.venv-train/bin/python -c 'import onnxruntime as o; print(o.__version__)'))"
.venv-train/bin/pytest -q "$@"
echo "== deployment environment (onnxruntime $(.venv-runtime/bin/python -c 'import onnxruntime as o; print(o.__version__)'))"
.venv-runtime/bin/pytest -q "$@"
