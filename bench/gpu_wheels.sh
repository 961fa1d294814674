#!/usr/bin/env bash
# Run HERE (a machine with the package registries) before bench/gpu_check.sh runs on a lent GPU machine,
# which reaches no registry: fetches, for its Python (3.12, x86-64), what sst-edge needs beyond that
# machine's image (PyTorch, ONNX Runtime, onnx, scipy, matplotlib, Lightning... are there), into .whl/
# (git-ignored; the device tool carries it, 64 MiB at most):
#   .whl/*.whl       wheels, installed there with pip --no-deps --target
#   .whl/site/nni/   NNI 3.0 without nni_node (90 MB of Node.js that only NNI's multi-process engine and
#                    web UI use; the GPU check searches with the in-process engine)
# Versions: constraints.txt's where it pins them.
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${PYV:-3.12}
rm -rf .whl && mkdir -p .whl/site
pin() { grep -i "^$1==" constraints.txt | head -1 | sed 's/;.*//' || true; }
dl() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl "$@" 2>&1 | grep -v '^WARNING' || true
}
# PyAV at the lowest version the package allows that has a cp312 wheel and works (issue 27: >= 15); the
# newest is larger
dl av==15.1.0
for p in astor json-tricks schema PythonWebHDFS prettytable responses typeguard websockets \
         yacs termcolor jsonschema jsonschema-specifications referencing rpds-py wcwidth portalocker; do
  spec=$(pin "$p"); dl "${spec:-$p}"
done
# fvcore and iopath publish source only: built here (pure Python, so the wheels fit any Python 3)
python3 -m pip wheel -q --no-deps -w .whl "$(pin fvcore)" "$(pin iopath)" 2>&1 | grep -v '^WARNING' || true
dl nni==3.0
python3 - <<'EOF'
import pathlib, zipfile
wheel = next(pathlib.Path(".whl").glob("nni-3.0-*.whl"))
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if not name.startswith("nni_node/"):
            z.extract(name, ".whl/site")
wheel.unlink()
EOF
du -sh .whl
