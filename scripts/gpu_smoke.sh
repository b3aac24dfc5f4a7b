#!/usr/bin/env bash
# debx on a CUDA machine, end to end, without installing anything (no network needed):
#   (a) torchrun --nproc_per_node 1 -m debx train --device cuda: the SST-2 quickstart model (tiny preset, 1 epoch,
#       max-seq-len 64, batch 64), with --stop-after and a timeout as guards
#   (b) debx eval --device cuda and --device cpu on that model: both accuracies, and the predictions compared
#   (c) bf16 autocast training, a few steps on the GPU (and fp16 with its GradScaler)
#   (d) torchrun DDP: 2 CPU processes (gloo) on this GPU machine (it used to pick nccl with a CPU model and crash),
#       and nccl with one process per GPU when the machine has 2 or more GPUs
#   (e) debx bench --device cuda: the report records the device
#   (f) the GPU-marked tests (pytest -m gpu tests/test_device.py), when pytest is installed
# Prints one PASS/FAIL line per check and exits 1 if any failed.
#
# Run from anywhere on a machine with an NVIDIA GPU and PyTorch; debx need not be installed:
#   GLUE_DIR=/path/to/glue bash scripts/gpu_smoke.sh
# Environment: GLUE_DIR (GLUE data; default ../shared/glue), PYTHON (default python3), SMOKE_OUT (work folder;
# default a new temporary folder), STOP_AFTER (train step guard, default 1100 > the 1053 steps of the epoch),
# TRAIN_TIMEOUT (seconds, default 600). For checking the script itself on a CPU machine: SMOKE_DEVICE=cpu
# SMOKE_TRAIN_ROWS=2000 (every --device cuda becomes --device cpu, on fewer training rows; fp16 and (f) are skipped).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export GLUE_DIR="${GLUE_DIR:-$ROOT/../shared/glue}"
OUT="${SMOKE_OUT:-$(mktemp -d -t debx-gpu-smoke-XXXXXX)}"
STOP_AFTER="${STOP_AFTER:-1100}"
TRAIN_TIMEOUT="${TRAIN_TIMEOUT:-600}"
DEV="${SMOKE_DEVICE:-cuda}"
ROWS=()
[ -n "${SMOKE_TRAIN_ROWS:-}" ] && ROWS=(--max-train-samples "$SMOKE_TRAIN_ROWS")
mkdir -p "$OUT"
debx() { "$PY" -m debx "$@"; }
# torchrun itself, unless $PYTHON names another interpreter (then its own torch.distributed.run, the same launcher)
if [ -z "${PYTHON:-}" ] && command -v torchrun >/dev/null 2>&1; then TORCHRUN=(torchrun); else TORCHRUN=("$PY" -m torch.distributed.run); fi

FAILED=0
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; FAILED=1; }
step() { printf '\n== %s\n' "$*"; }

step "environment"
"$PY" - "$DEV" <<'EOF' || { echo "FAIL environment: PyTorch does not see a CUDA device"; exit 1; }
import torch, sys
print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"{torch.cuda.device_count()} GPU(s): {', '.join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))}")
sys.exit(0 if torch.cuda.is_available() or len(sys.argv) > 1 and sys.argv[1] == "cpu" else 1)
EOF
[ -d "$GLUE_DIR/SST-2" ] || [ -d "$GLUE_DIR/sst2" ] || { echo "FAIL environment: no SST-2 under GLUE_DIR=$GLUE_DIR"; exit 1; }
echo "work folder: $OUT"
NGPU=$("$PY" -c 'import torch; print(torch.cuda.device_count())')

# -------------------------------------------------------------------------------------------------------------------
step "(a) torchrun --nproc_per_node 1 -m debx train --device cuda (SST-2 quickstart model)"
MODEL="$OUT/model"
t0=$(date +%s)
echo "+ ${TORCHRUN[*]} --nproc_per_node 1 -m debx train --task sst2 --preset tiny -o $MODEL --epochs 1 --batch-size 64 --max-seq-len 64 --seed 42 --device $DEV --stop-after $STOP_AFTER ${ROWS[*]}"
timeout "$TRAIN_TIMEOUT" "${TORCHRUN[@]}" --nproc_per_node 1 -m debx train --task sst2 --preset tiny -o "$MODEL" \
  --epochs 1 --batch-size 64 --max-seq-len 64 --seed 42 --device "$DEV" --stop-after "$STOP_AFTER" "${ROWS[@]}" 2>&1 | tee "$OUT/train.log"
rc=${PIPESTATUS[0]}
secs=$(( $(date +%s) - t0 ))
if [ "$rc" = 0 ] && [ -f "$MODEL/config.json" ] && grep -q "device: $DEV" "$OUT/train.log"; then
  pass "(a) torchrun train --device $DEV: exit 0 in ${secs}s; $(grep -o 'device: .*' "$OUT/train.log" | head -1); $(grep -o 'step [0-9]*: dev accuracy [0-9.]*' "$OUT/train.log" | tail -1)"
else
  fail "(a) torchrun train --device $DEV: exit $rc after ${secs}s (see $OUT/train.log)"
fi

# -------------------------------------------------------------------------------------------------------------------
step "(b) debx eval --device cuda vs --device cpu"
if [ -f "$MODEL/config.json" ]; then
  debx eval --task sst2 --model "$MODEL" --device "$DEV" --report "$OUT/eval.cuda.json" > "$OUT/eval.cuda.log" 2>&1; rc_g=$?
  debx eval --task sst2 --model "$MODEL" --device cpu --report "$OUT/eval.cpu.json" > "$OUT/eval.cpu.log" 2>&1; rc_c=$?
  if [ "$rc_g" = 0 ] && [ "$rc_c" = 0 ]; then
    "$PY" - "$OUT/eval.cuda.json" "$OUT/eval.cpu.json" "$DEV" <<'EOF'
import json, sys
g, c = (json.load(open(p)) for p in sys.argv[1:3])
ag, ac = g["metrics"]["accuracy"], c["metrics"]["accuracy"]
changed = sum(a != b for a, b in zip(g["predictions"], c["predictions"]))
print(f"eval sst2 dev: accuracy {ag:.2f} on {g['device']}, {ac:.2f} on {c['device']}; "
      f"{changed} of {len(g['predictions'])} predictions differ")
ok = g["device"].startswith(sys.argv[3]) and c["device"] == "cpu" and changed <= 1 and abs(ag - ac) <= 100 / len(g["predictions"]) + 1e-9
print(("PASS" if ok else "FAIL") + f" (b) eval --device {sys.argv[3]} {ag:.2f} vs --device cpu {ac:.2f} ({changed} prediction(s) differ)")
sys.exit(0 if ok else 1)
EOF
    [ $? = 0 ] || FAILED=1
  else
    fail "(b) eval: --device $DEV exit $rc_g, --device cpu exit $rc_c (see $OUT/eval.*.log)"; tail -3 "$OUT"/eval.*.log
  fi
else
  fail "(b) eval: no model from (a)"
fi

# -------------------------------------------------------------------------------------------------------------------
step "(c) autocast training on the GPU: bf16, then fp16 with a GradScaler (30 steps each)"
TOK=()
[ -f "$MODEL/spm.model" ] && TOK=(--tokenizer "$MODEL/spm.model")  # skip training another tokenizer
PRECS=(bf16 fp16)
[ "$DEV" = cuda ] || PRECS=(bf16)  # fp16 autocast is GPU-only
for prec in "${PRECS[@]}"; do
  debx train --task sst2 --preset tiny -o "$OUT/$prec" "${TOK[@]}" --epochs 1 --batch-size 64 --max-seq-len 64 \
    --max-train-samples 1920 --device "$DEV" --precision "$prec" > "$OUT/train.$prec.log" 2>&1; rc=$?
  if [ "$rc" = 0 ] && grep -q "device: $DEV.*precision $prec" "$OUT/train.$prec.log" && "$PY" - "$OUT/$prec" "$DEV" <<'EOF'
import json, math, sys
from pathlib import Path
m = json.loads((Path(sys.argv[1]) / "metrics.json").read_text())
losses = [r["loss"] for r in map(json.loads, (Path(sys.argv[1]) / "train_log.jsonl").read_text().splitlines()) if "loss" in r]
print(f"  {m['precision']} on {m['device']}: {m['steps']} steps, losses {losses}, dev accuracy {m['best']:.2f}")
sys.exit(0 if losses and all(math.isfinite(x) for x in losses) and m["device"].startswith(sys.argv[2]) else 1)
EOF
  then
    pass "(c) train --precision $prec --device $DEV: $(grep -o 'step [0-9]*: dev accuracy [0-9.]*' "$OUT/train.$prec.log" | tail -1)"
  else
    fail "(c) train --precision $prec --device $DEV: exit $rc (see $OUT/train.$prec.log)"; tail -3 "$OUT/train.$prec.log"
  fi
done

# -------------------------------------------------------------------------------------------------------------------
step "(d) torchrun DDP: 2 CPU processes (gloo) on this GPU machine; nccl on 2 GPUs when there are 2"
timeout 300 "${TORCHRUN[@]}" --nproc_per_node 2 --master_port 29561 -m debx train --task sst2 --preset tiny \
  -o "$OUT/ddp-cpu" "${TOK[@]}" --epochs 1 --batch-size 32 --max-seq-len 64 --max-train-samples 256 --device cpu \
  --threads 1 > "$OUT/ddp-cpu.log" 2>&1; rc=$?
if [ "$rc" = 0 ] && grep -q "device: cpu.*2 process(es) (gloo)" "$OUT/ddp-cpu.log"; then
  pass "(d) torchrun --nproc_per_node 2 train --device cpu: gloo, exit 0"
else
  fail "(d) torchrun --nproc_per_node 2 train --device cpu: exit $rc (see $OUT/ddp-cpu.log)"; tail -5 "$OUT/ddp-cpu.log"
fi
if [ "$DEV" = cuda ] && [ "$NGPU" -ge 2 ]; then
  timeout 300 "${TORCHRUN[@]}" --nproc_per_node 2 --master_port 29562 -m debx train --task sst2 --preset tiny \
    -o "$OUT/ddp-cuda" "${TOK[@]}" --epochs 1 --batch-size 64 --max-seq-len 64 --max-train-samples 2048 \
    --device cuda > "$OUT/ddp-cuda.log" 2>&1; rc=$?
  if [ "$rc" = 0 ] && grep -q "device: cuda:0.*2 process(es) (nccl)" "$OUT/ddp-cuda.log"; then
    pass "(d) torchrun --nproc_per_node 2 train --device cuda: nccl, exit 0"
  else
    fail "(d) torchrun --nproc_per_node 2 train --device cuda: exit $rc (see $OUT/ddp-cuda.log)"; tail -5 "$OUT/ddp-cuda.log"
  fi
else
  echo "SKIP (d) nccl with 2 processes: this machine has $NGPU GPU(s)"
fi

# -------------------------------------------------------------------------------------------------------------------
step "(e) debx bench --device cuda"
if [ -f "$MODEL/config.json" ]; then
  debx bench --model "$MODEL" --device "$DEV" --batch 1,32 --seq 64 --iters 20 --json "$OUT/bench.json" \
    > "$OUT/bench.log" 2>&1; rc=$?
  grep -v "^loading\|^timing" "$OUT/bench.log" | tail -8
  if [ "$rc" = 0 ] && "$PY" -c "import json,sys; d=json.load(open('$OUT/bench.json')); sys.exit(0 if all(str(r['device']).startswith('$DEV') for r in d['results']) else 1)"; then
    pass "(e) bench --device $DEV: $(grep -m1 '^ran on:' "$OUT/bench.log")"
  else
    fail "(e) bench --device $DEV: exit $rc (see $OUT/bench.log)"
  fi
fi

# -------------------------------------------------------------------------------------------------------------------
step "(f) GPU-marked tests"
if [ "$DEV" != cuda ]; then
  echo "SKIP (f) needs a GPU"
elif "$PY" -c "import pytest" 2>/dev/null; then
  "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_device.py > "$OUT/pytest-gpu.log" 2>&1; rc=$?
  tail -5 "$OUT/pytest-gpu.log"
  if [ "$rc" = 0 ]; then pass "(f) pytest -m gpu tests/test_device.py"; else fail "(f) pytest -m gpu tests/test_device.py: exit $rc"; fi
else
  echo "SKIP (f) pytest is not installed"
fi

echo
if [ "$FAILED" = 0 ]; then echo "GPU SMOKE: PASS (outputs in $OUT)"; else echo "GPU SMOKE: FAIL (outputs in $OUT)"; fi
exit "$FAILED"
