#!/usr/bin/env python
"""Does Optimum load a `debx export CKPT -o DIR/` folder, and does it predict what `debx eval` predicts?

    bash scripts/optimum_env.sh                                  # the Optimum side venv (once)
    debx export CKPT -o DIR/ --optimum-axes
    python scripts/optimum_check.py DIR [--task sst2] [--limit N]

Runs ORTModelForSequenceClassification.from_pretrained(DIR) + AutoTokenizer (and one pipeline() call) in the
Optimum venv (debx.bench.optimum_python: $DEBX_OPTIMUM_VENV or ./.venv-optimum) on the task's dev rows, then
`debx eval`'s evaluation of DIR/model.onnx in this environment, and compares the predictions row by row.
Exit 0 when every prediction agrees (a flip is tolerated only on an exact tie, logit margin <= 1e-5).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

OPTIMUM_SIDE = r"""
import json, sys
import numpy as np
from optimum.onnxruntime import ORTModelForSequenceClassification
from transformers import AutoTokenizer, pipeline
folder, rows = sys.argv[1], json.loads(sys.stdin.read())
model = ORTModelForSequenceClassification.from_pretrained(folder)
tok = AutoTokenizer.from_pretrained(folder)
logits = []
for i in range(0, len(rows), 32):
    a = [r[0] for r in rows[i:i + 32]]
    b = [r[1] for r in rows[i:i + 32]] if rows[i][1] is not None else None
    enc = tok(a, b, padding=True, truncation=True, max_length=int(sys.argv[2]), return_tensors="np")
    logits += model(**enc).logits.tolist()
pipe = pipeline("text-classification", model=model, tokenizer=tok)
print(json.dumps({"logits": logits, "pipeline": pipe(rows[0][0]), "model_class": type(model).__name__}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--data-dir", type=Path, default=None)
    args = ap.parse_args()

    import numpy as np

    from debx import evaluate
    from debx.artifacts import read_sidecar
    from debx.bench import optimum_python
    from debx.tasks import load_split, resolve_data_dir

    py = optimum_python()
    if py is None:
        print("no Optimum venv: run bash scripts/optimum_env.sh (or set DEBX_OPTIMUM_VENV)", file=sys.stderr)
        return 2
    data_dir = resolve_data_dir(args.data_dir)
    rows = load_split(args.task, data_dir, "dev", limit=args.limit)
    max_len = read_sidecar(args.folder / "model.onnx").max_seq_len or 512
    p = subprocess.run([str(py), "-c", OPTIMUM_SIDE, str(args.folder), str(max_len)],
                       input=json.dumps([[e.text_a, e.text_b] for e in rows]), capture_output=True, text=True)
    if p.returncode != 0:
        print(p.stderr[-3000:], file=sys.stderr)
        return 1
    got = json.loads(p.stdout.strip().splitlines()[-1])
    logits = np.array(got["logits"])
    theirs = dict(zip([e.guid for e in rows], logits.argmax(-1).tolist()))
    margin = {e.guid: float(np.diff(np.sort(lg)[-2:])[0]) for e, lg in zip(rows, logits)}
    res = evaluate(args.task, args.folder / "model.onnx", data_dir=data_dir, limit=args.limit)
    ours = dict(zip(res.guids, res.predictions.tolist()))
    differ = [g for g in ours if ours[g] != theirs.get(g)]
    real = [g for g in differ if margin.get(g, 1.0) > 1e-5]
    labels = {e.guid: e.label for e in rows}
    acc = 100.0 * np.mean([theirs[g] == labels[g] for g in theirs])
    print(f"Optimum {got['model_class']}.from_pretrained({args.folder}) + pipeline(): {got['pipeline']}")
    print(f"{args.task} dev, {len(rows)} rows: Optimum accuracy {acc:.2f}, debx eval "
          f"{', '.join(f'{k} {v:.2f}' for k, v in res.metrics.items())}; predictions differing: {len(differ)} "
          f"({len(differ) - len(real)} on exact ties)")
    return 0 if not real and set(ours) == set(theirs) else 1


if __name__ == "__main__":
    sys.exit(main())
