#!/usr/bin/env bash
# The GPU benchmark a session runs when it is lent a GPU machine: one call of under 8 minutes.
#
#   1. Conv-2 on Fashion-MNIST: plain loop vs lth (one unit, channels-last, fp32 and bf16) vs N
#      units as one vmapped computation (grouped convolutions), and evaluation speed
#      (benchmarks/conv_speed.py --device cuda);
#   2. the LeNet-300-100 figure's per-level throughput: one trial of the figure's levels 0-2 with
#      its three branches (lth run, shortened to 5,000 iterations), wall time per level;
#   3. a short Conv-2 IMP run (lth run, 1,000 iterations, 2 levels, 3 branches);
#   4. lenet_full: levels 0-2 of the LeNet-300-100 figure at the paper's full protocol (5 trials,
#      50,000 iterations, 3 branches: 35 units), to compare per-level wall time and the numbers with
#      the CPU run of the same figure (benchmarks/results/lenet_figure).
#   5. cuda_tests: tests/training/test_cuda.py, the CUDA path's tests that CI (no GPU) skips.
# GPU_STEPS picks steps (default: "cuda_tests conv_speed lenet_levels conv2_imp"; lenet_full takes
# about 3 min).
#
# Data: the MNIST and Fashion-MNIST files must travel with the working tree, because ../shared
# does not; copy them first (here, on the CPU machine):
#     mkdir -p .gpu-data && cp -r ../shared/datasets/mnist ../shared/datasets/fashion-mnist .gpu-data/
#     echo /.gpu-data/ >> .git/info/exclude
# and run with carry=[".gpu-data"]:
#     bash benchmarks/gpu.sh
# Results go to $OUT/gpu (the device tool brings $OUT back) or benchmarks/results/gpu; copy them to
# benchmarks/results/gpu/ and their numbers into docs/PERFORMANCE.md, "GPU".
set -euo pipefail
export PYTHONUNBUFFERED=1
DATA=${LTH_GPU_DATA:-.gpu-data}
RES=${OUT:-benchmarks/results}/gpu
mkdir -p "$RES"
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
} > "$RES/machine.txt" 2>&1
cat "$RES/machine.txt"

STEPS=" ${GPU_STEPS:-cuda_tests conv_speed lenet_levels conv2_imp} "
step() {  # name, limit in seconds, command...
  local name=$1 limit=$2; shift 2
  [[ $STEPS == *" $name "* ]] || return 0
  local t0=$SECONDS rc=0
  timeout "$limit" "$@" > "$RES/$name.log" 2>&1 || rc=$?
  printf '%s\texit %s\t%s s\n' "$name" "$rc" "$((SECONDS - t0))" | tee -a "$RES/steps.tsv"
  tail -25 "$RES/$name.log"
}

step cuda_tests 120 $PY -m pytest -q -p no:cacheprovider tests/training/test_cuda.py -rs

step conv_speed 150 $PY benchmarks/conv_speed.py --device cuda --data-dir "$DATA" --iterations 200 \
  --repeats 2 --vmap-units 8 --test-fraction 0.2 --results "$RES"

step lenet_levels 150 $PY -m lth run --preset lenet300-mnist --data-dir "$DATA" --device cuda \
  --iterations 5000 --levels 2 --trials 1 --branches ticket,reinit,random_mask --test-eval best \
  --out "$RES/runs" --quiet

step conv2_imp 150 $PY -m lth run --preset conv2-cifar10 --set name=conv2-fashion \
  --set data.dataset=fashion-mnist --data-dir "$DATA" --device cuda --iterations 1000 --levels 2 \
  --trials 1 --branches ticket,reinit,random_mask --test-eval best --out "$RES/runs" --quiet

step lenet_full 240 $PY -m lth run --preset lenet300-mnist --data-dir "$DATA" --device cuda \
  --trials 5 --levels 2 --branches ticket,reinit,random_mask --test-eval best --out "$RES/runs" --quiet

# per-unit wall times of both runs, from their result records
$PY - "$RES" <<'EOF' | tee "$RES/runs.md"
import json, sys
from pathlib import Path
res = Path(sys.argv[1])
print("| run | trial/level/branch | last iteration | train seconds | early stop | test acc there |")
print("|---|---|---|---|---|---|")
for f in sorted(res.glob("runs/*/trial_*/level_*/*/result.json")):
    r = json.loads(f.read_text())
    rec = r.get("record", r)
    print(f"| {f.parts[-5]} | {f.parts[-4]}/{f.parts[-3]}/{f.parts[-2]} | {rec.get('final_iteration', '?')} | "
          f"{rec.get('train_seconds', float('nan')):.1f} | {rec.get('early_stop_iteration', '?')} | "
          f"{rec.get('early_stop_test_accuracy', float('nan')):.4f} |")
EOF
# the runs' records (no weights), in one file: $OUT brings back 8 files, 2 folders deep
(cd "$RES" && find runs -name '*.json' -print0 | tar czf runs_records.tgz --null -T -) || true
rm -rf "$RES/runs"/*/trial_*/level_*/*/*.pt "$RES/runs"/*/trial_*/*.pt "$RES/runs"/*/trial_*/level_*/*.pt 2>/dev/null || true
