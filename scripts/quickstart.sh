#!/usr/bin/env bash
# The main job end to end on the embedded default: a tiny DeBERTa-v3 trained from scratch on SST-2
#   train → export (validated) → calibrate INT8 and FP16 → eval with the paper gate → bench
# Reads GLUE from $GLUE_DIR or ../shared/glue; writes to $DEBX_OUT (default runs/quickstart), replacing an old run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=setup.sh
. "$ROOT/scripts/setup.sh"
OUT="${DEBX_OUT:-$ROOT/runs/quickstart}"
TASK=sst2
rm -rf "$OUT" && mkdir -p "$OUT"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
t0=$(date +%s)

step "1/5 train: tiny DeBERTa-v3 from scratch on SST-2 (1 epoch, own SentencePiece vocabulary)"
debx train --task "$TASK" --preset tiny -o "$OUT/model" --epochs 1 --batch-size 64 --max-seq-len 64 --seed 42

step "2/5 export: ONNX with one fused debx attention node per layer (dynamic batch and sequence), validated against PyTorch"
debx export "$OUT/model" -o "$OUT/model.onnx" --attention debx

step "3/5 calibrate: INT8 (explicit Q/DQ, entropy; for ONNX Runtime CPU) and FP16 from SST-2 train rows"
debx calibrate "$OUT/model.onnx" --task "$TASK" -o "$OUT/model.int8.onnx" --target ort
debx calibrate "$OUT/model.onnx" --task "$TASK" --precision fp16 -o "$OUT/model.fp16.onnx"

step "4/5 eval: SST-2 dev, each artifact gated against the PyTorch FP32 reference (paper tolerance ±0.3)"
debx eval --task "$TASK" --model "$OUT/model" --report "$OUT/eval.pytorch.json"
for p in fp32 int8 fp16; do
  f="$OUT/model.onnx"; [ "$p" = fp32 ] || f="$OUT/model.$p.onnx"
  debx eval --task "$TASK" --engine "$f" --reference "$OUT/eval.pytorch.json" --gate paper --report "$OUT/eval.$p.json"
done

step "5/5 bench: PyTorch vs ONNX Runtime FP32 vs INT8, interleaved"
if debx bench --help >/dev/null 2>&1; then
  debx bench --model "$OUT/model" --engine "$OUT/model.onnx" --engine "$OUT/model.int8.onnx" \
    --batch 1,8 --seq 64 --json "$OUT/bench.json" --plot "$OUT/bench.png"
else
  echo "debx bench is not available in this version"
fi

printf '\ndone in %ss: %s\n' "$(( $(date +%s) - t0 ))" "$OUT"
