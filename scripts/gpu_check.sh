#!/usr/bin/env bash
# The short check to run on a machine with an NVIDIA GPU. It runs in the repository root, with
# that machine's own python3 (it holds a CUDA PyTorch):
#
#   1. benchmarks/bench_ple.py --device cuda: the batched PLE against the loop reference,
#      forward+backward on the GPU (needs only torch and pydantic);
#   2. the training job on one GPU (cluster.use_gpu=true: NCCL, row_wise allowed), the training
#      benchmark's rows/s on it, and the AUC check of configs/jobs/train_quality.yaml; this needs torchrec,
#      the CUDA build of fbgemm-gpu 1.8.0 (matching that machine's torch) and ray, and is skipped,
#      saying so, where they do not import;
#   3. TorchRec's managed-collision EmbeddingBagCollection sharded row-wise on NCCL
#      (scripts/probe_managed_collisions.py): the case CPU cannot run; then the project's own
#      managed tables (a replicated mapping in front of the sharded tables) in the training job on
#      one GPU, on logs whose catalogue drifts daily.
#
# Missing pure-Python packages travel as wheels in .whl/ (ignored by git; carried with the run's
# `carry: [".whl"]`), downloaded here for that machine's Python 3.12, e.g.
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 --platform any -d .whl pydantic pydantic-core annotated-types \
#       typing-inspection pyyaml
# Results go to $OUT (the device tool brings that folder back), else to /tmp/gpu_check.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu_check}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 RAY_DATA_DISABLE_PROGRESS_BARS=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "error: installing the carried wheels failed"; exit 1; }
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"

python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__, torch.cuda.get_device_name())" \
  || exit 1

echo "== 1. batched PLE against the loop reference, forward+backward on CUDA"
python3 benchmarks/bench_ple.py --device cuda 2>&1 | tee "$OUT/bench_ple_cuda.txt"

echo "== 2. the training job on one GPU"
if ! python3 -c "import torchrec, fbgemm_gpu, ray" 2>"$OUT/imports.txt"; then
  echo "skipped: torchrec / fbgemm_gpu (CUDA build) / ray do not import here:"; tail -3 "$OUT/imports.txt"
  exit 0
fi
work=$(mktemp -d)
python3 -m jobs.train --config configs/jobs/train_local.yaml cluster.use_gpu=true cluster.num_workers=1 \
    "data.root=$work/data" "output_dir=$work/runs" 2>&1 | grep -v "^\s*$" | tail -20 | tee "$OUT/train_gpu.txt"
python3 benchmarks/bench_train.py --gpu --work-dir "$work/bench" 2>&1 | grep -E "rows/s|worker\(s\)" | tee "$OUT/bench_train_gpu.txt"
python3 -m jobs.train --config configs/jobs/train_quality.yaml cluster.use_gpu=true cluster.num_workers=1 \
    "data.root=$work/quality" "output_dir=$work/runs" 2>&1 | grep -E "AUC" | tee "$OUT/quality_gpu.txt"
echo "== 3. managed-collision tables sharded row-wise on one GPU"
python3 scripts/probe_managed_collisions.py 2>&1 | grep -v "^\s*$" | tail -8 | tee "$OUT/managed_collisions_gpu.txt"
python3 -m jobs.train --config configs/jobs/train_local.yaml cluster.use_gpu=true cluster.num_workers=1 \
    data.spec=configs/features/synthetic_managed.yaml data.generate.id_drift=0.1 train.max_steps=600 \
    "data.root=$work/managed" "output_dir=$work/runs" name=managed 2>&1 | grep -E "AUC|managed ids|error" \
    | tee "$OUT/managed_train_gpu.txt"
