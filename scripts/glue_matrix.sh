#!/usr/bin/env bash
# For each of SST-2, MRPC, RTE, STS-B and CoLA: train a tiny DeBERTa-v3 with `debx train`, export it (validated),
# calibrate INT8 and FP16, and gate every artifact against the PyTorch FP32 reference with the paper tolerances.
# Also the fast CPU path (the quickstart's and scripts/speed.sh's recipe): --attention debx, INT8 --target ort.
# Prints one summary table (also written to $OUT/summary.md). Usage: bash scripts/glue_matrix.sh [task ...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=setup.sh
. "$ROOT/scripts/setup.sh"
OUT="${DEBX_OUT:-$ROOT/runs/glue-matrix}"
TASKS=("$@"); [ ${#TASKS[@]} -gt 0 ] || TASKS=(sst2 mrpc rte stsb cola)
declare -A EPOCHS=([sst2]=1 [mrpc]=5 [rte]=5 [stsb]=5 [cola]=4)
mkdir -p "$OUT"
for t in "${TASKS[@]}"; do
  d="$OUT/$t"; rm -rf "$d"; mkdir -p "$d"
  debx train --task "$t" --preset tiny -o "$d/model" --epochs "${EPOCHS[$t]:-3}" --batch-size 32 --max-seq-len 128
  debx export "$d/model" -o "$d/model.onnx"
  debx calibrate "$d/model.onnx" --task "$t" -o "$d/model.int8.onnx"                      # TensorRT + ORT format
  debx calibrate "$d/model.onnx" --task "$t" --target ort -o "$d/model.int8ort.onnx"       # fastest on ORT CPU
  debx calibrate "$d/model.onnx" --task "$t" --precision fp16 -o "$d/model.fp16.onnx"
  debx export "$d/model" -o "$d/model.cpu.onnx" --attention debx                           # fused CPU attention
  debx calibrate "$d/model.cpu.onnx" --task "$t" --target ort -o "$d/model.cpuint8.onnx"
  debx eval --task "$t" --model "$d/model" --report "$d/eval.pytorch.json"
  for p in fp32 int8 int8ort fp16 cpuint8; do
    f="$d/model.onnx"; [ "$p" = fp32 ] || f="$d/model.$p.onnx"
    debx eval --task "$t" --engine "$f" --reference "$d/eval.pytorch.json" --gate paper --report "$d/eval.$p.json" || true
  done
done
python - "$OUT" "${TASKS[@]}" <<'PY'
import json, sys
from pathlib import Path
out, tasks = Path(sys.argv[1]), sys.argv[2:]
rows = ["| task | metric | PyTorch FP32 | ONNX FP32 | INT8 (trt) | INT8 (ort) | FP16 | INT8 CPU path (debx op) | allowed drop | verdict (FP32/INT8/INT8-ort/FP16/CPU) | changed preds INT8 / CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
for t in tasks:
    ref = json.loads((out / t / "eval.pytorch.json").read_text())
    m = ref["primary_metric"]
    r = {p: json.loads((out / t / f"eval.{p}.json").read_text()) for p in ("fp32", "int8", "int8ort", "fp16", "cpuint8")}
    g = {p: r[p].get("gate", {}) for p in r}
    rows.append(f"| {t} | {m} | {ref['metrics'][m]:.2f} | {r['fp32']['metrics'][m]:.2f} | {r['int8']['metrics'][m]:.2f} | "
                f"{r['int8ort']['metrics'][m]:.2f} | {r['fp16']['metrics'][m]:.2f} | {r['cpuint8']['metrics'][m]:.2f} | "
                f"{g['int8'].get('allowed_drop', '?')} | "
                f"{'/'.join(str(g[p].get('verdict', '?')) for p in ('fp32', 'int8', 'int8ort', 'fp16', 'cpuint8'))} | "
                f"{100 * g['int8'].get('changed', float('nan')):.1f}% / {100 * g['cpuint8'].get('changed', float('nan')):.1f}% |")
(out / "summary.md").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
PY
