#!/usr/bin/env bash
# Every CUDA check in one go, for a machine with a GPU (run from the repository root):
#   bash scripts/run_cuda_checks.sh [OUT_DIR]
# 1. tests/cuda: each engine path (CROWN, alpha-CROWN, GenBaB, input splitting, the chain, PGD,
#    verify_instance, explain) on the GPU against the CPU;
# 2. the bound benchmark on the GPU (CIFAR-sized conv nets; auto_LiRPA beside it if AUTO_LIRPA names a checkout);
# 3. small VNN-COMP suites on CPU and CUDA at the same cap, when ../shared/benchmarks is there.
# Output goes to OUT_DIR (default $OUT, else cuda_checks/).
set -uo pipefail
out="${1:-${OUT:-cuda_checks}}"
mkdir -p "$out"
python="${PYTHON:-python}"
"$python" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible'; print(torch.cuda.get_device_name(0))" \
    | tee "$out/device.txt" || exit 1
"$python" -m pytest -q -p no:cacheprovider -m cuda tests/cuda -rs 2>&1 | tee "$out/tests_cuda.txt"
lirpa=()
if [ -n "${AUTO_LIRPA:-}" ]; then lirpa=(--auto-lirpa "$AUTO_LIRPA"); fi
PYTHONPATH=. "$python" benchmarks/bounds.py --models cifar --device cuda --repeat 3 --eps 0.00784 "${lirpa[@]}" 2>&1 \
    | tee "$out/bounds_cuda.txt"
if [ -d ../shared/benchmarks ]; then
    for device in cpu cuda; do
        PYTHONPATH=. timeout 240 "$python" benchmarks/vnncomp.py cgan_2023_nonlinear acasxu --cap 10 --workers 2 \
            --device "$device" --out "$out/vnncomp_$device" 2>&1 | tail -20 | tee "$out/vnncomp_$device.txt"
    done
fi
