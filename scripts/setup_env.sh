#!/usr/bin/env bash
# Idempotent set-up: creates .venv (or $VENV) and installs the CPU stack plus this project
# in editable mode. Re-running it only installs what is missing.
#
# torchrec declares a dependency on the CUDA build of fbgemm-gpu, which fails to import on a
# machine without CUDA (libtorch_cuda.so missing). We therefore install torchrec with
# --no-deps and list its real runtime needs ourselves. For GPU clusters see README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# pip prints a warning per missing local index folder on some machines: keep the log readable.
pip_install() {
  local log rc=0
  log=$(mktemp)
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" >"$log" 2>&1 || rc=$?
  grep -v -e "is ignored: it is neither" -e "requires fbgemm-gpu, which is not installed" \
          -e "dependency resolver does not currently" "$log" || true
  rm -f "$log"
  return "$rc"
}

pip_install "torch==2.13.0" "fbgemm-gpu-cpu==1.8.0"
pip_install --no-deps "torchrec==1.8.0"
# torchrec's real runtime needs (its declared list minus fbgemm-gpu).
pip_install pyre-extensions tensordict "torchmetrics==1.0.3" tqdm iopath
pip_install "ray[data,train,default]==2.60.0" pyarrow
pip_install -e ".[dev]"
"$VENV/bin/python" -c "import torch, torchrec, ray, fbgemm_gpu; print('env ok: torch', torch.__version__, 'torchrec', torchrec.__version__, 'ray', ray.__version__)"
