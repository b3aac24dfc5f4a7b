#!/usr/bin/env bash
# The Speed issue's measurement: DeBERTa-v3-base shapes (12 layers, hidden 768, 12 heads, vocab 128100, 256 buckets,
# random weights with the usual 0.02 init), debx FP32 and INT8 on ONNX Runtime CPU against PyTorch eager (debx and
# transformers) and Optimum + ONNX Runtime FP32 / dynamic INT8, side by side in `debx bench`.
#   bash scripts/speed.sh                 # 2 threads, batch 1 x 128 and 512, batch 8 x 128
# Writes to $DEBX_OUT (default runs/speed). Needs the Optimum side environment (scripts/optimum_env.sh, run here).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=setup.sh
. "$ROOT/scripts/setup.sh"
OUT="${DEBX_OUT:-$ROOT/runs/speed}"
THREADS="${THREADS:-2}"
SHARED="${DEBX_SHARED:-$ROOT/../shared}"
mkdir -p "$OUT"
export OPENBLAS_NUM_THREADS=1  # NumPy's BLAS threads must not compete with the engines being timed
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Optimum side environment"
bash "$ROOT/scripts/optimum_env.sh"

if [ ! -f "$OUT/v3base/config.json" ]; then
  step "random DeBERTa-v3-base checkpoint + the real v3 tokenizer"
  python - "$OUT/v3base" "$SHARED/tokenizers/deberta-v3/spm.model" <<'PY'
import sys
from debx.tokenizer import save_tokenizer, spm_tokenizer
from debx.variants import build_checkpoint
build_checkpoint("v3", sys.argv[1], hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, max_position_embeddings=512, position_buckets=256, vocab_size=128100,
                 initializer_range=0.02)
save_tokenizer(spm_tokenizer(sys.argv[2]), sys.argv[1])
PY
fi

step "export (fused debx attention) and INT8 for ONNX Runtime CPU (the recipe the quickstart gates)"
debx export "$OUT/v3base" -o "$OUT/model.onnx" --attention debx
debx calibrate "$OUT/model.onnx" --task sst2 --target ort -o "$OUT/model.int8.onnx"

step "bench: batch 1 x 128 and 512"
debx bench --model "$OUT/v3base" --engine "$OUT/model.onnx" --engine "$OUT/model.int8.onnx" --compare hf,optimum \
  --batch 1 --seq 128,512 --threads "$THREADS" --iters 15 --ratio-to optimum-int8 \
  --json "$OUT/bench_b1.json" --plot "$OUT/bench_b1.png"
step "bench: batch 8 x 128"
debx bench --model "$OUT/v3base" --engine "$OUT/model.onnx" --engine "$OUT/model.int8.onnx" --compare hf,optimum \
  --batch 8 --seq 128 --threads "$THREADS" --iters 9 --ratio-to optimum-int8 \
  --json "$OUT/bench_b8.json" --plot "$OUT/bench_b8.png"
