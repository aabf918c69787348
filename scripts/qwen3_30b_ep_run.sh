#!/usr/bin/env bash
# Issue 7's run, in one call on the GPU machine: full-parameter bf16 fine-tuning throughput of the Qwen3-30B-A3B
# geometry (random init, sequence 4096, one sequence per GPU) with expert parallelism over every GPU of the machine
# (EP = number of GPUs), 3 warm-up steps then 20 timed steps. Prints a short table last: tokens/s per GPU, TFLOP/s per
# GPU, memory per GPU, communication share of the step.
# Usage: scripts/qwen3_30b_ep_run.sh OUT_DIR [GPUS] [LAYERS] [extra moetune bench options...]
#   GPUS defaults to every visible GPU; LAYERS to 48 (the full model), fewer on machines too small for it (on two
#   H200s: 16). Binaries come from .gpu_bundle/bundle.tar.xz as for scripts/gpu_run.sh.
set -uo pipefail
out="${1:?usage: scripts/qwen3_30b_ep_run.sh OUT_DIR [GPUS] [LAYERS] [bench options...]}"
gpus="${2:-$(nvidia-smi -L | wc -l)}"
layers="${3:-48}"
shift $(( $# < 3 ? $# : 3 ))
mkdir -p "$out"
cd "$(dirname "$0")/.."
if [ -f .gpu_bundle/bundle.tar.xz ]; then
  rm -rf /tmp/moetune_bundle && mkdir -p /tmp/moetune_bundle && tar xJf .gpu_bundle/bundle.tar.xz -C /tmp/moetune_bundle
  mkdir -p build && cp /tmp/moetune_bundle/bin/* build/
  export LD_LIBRARY_PATH="/tmp/moetune_bundle/lib:${LD_LIBRARY_PATH:-}"
fi
export NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
name="qwen3_30b_a3b_${layers}l_ep${gpus}"
build/moetune launch --nproc "$gpus" -- bench --geometry qwen3-30b-a3b --layers "$layers" --ep "$gpus" --recipe bf16 \
  --warmup 3 --steps 20 --json "$out/$name.json" "$@" 2>&1 | tee "$out/$name.log" | grep '^\[rank 0\]'
status=${PIPESTATUS[0]}
echo
echo "=== summary ==="
if [ "$status" = 0 ]; then
  python3 - "$out/$name.json" "$gpus" "$layers" <<'PY' | tee "$out/summary.txt"
import json, sys
r = json.load(open(sys.argv[1]))
b = r["breakdown_ms"]
step_ms = r["step_s"] * 1e3
print(f"Qwen3-30B-A3B geometry, {sys.argv[3]} layers, EP={sys.argv[2]}, seq {r['seq_len']} x {r['batch_size']} per GPU")
print(f"{'tokens/s per GPU':<24}{r['tokens_per_s']:,.0f}")
print(f"{'TFLOP/s per GPU':<24}{r['tflops']:.0f} (MFU {100 * r['mfu']:.1f}%)")
print(f"{'memory per GPU':<24}{r['memory_gib']:.1f} GiB")
print(f"{'communication share':<24}{b['communication']:.1f} of {step_ms:.1f} ms ({100 * b['communication'] / step_ms:.0f}%)")
PY
else
  tail -5 "$out/$name.log"
  echo "FAIL (exit $status, see $name.log)" | tee "$out/summary.txt"
fi
exit "$status"
