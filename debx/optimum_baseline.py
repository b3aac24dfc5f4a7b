"""The Optimum + ONNX Runtime baselines of `debx bench --compare optimum`, built with Optimum's own API.

This file imports nothing from debx: `debx bench` runs it with the Python of the Optimum side venv
(scripts/optimum_env.sh) when Optimum cannot be imported in the main environment, and calls `build` directly when
it can. Three steps, each the one an Optimum user would take:

  1. export      optimum.exporters.onnx.main_export (task text-classification / feature-extraction / fill-mask)
  2. optimize    ORTOptimizer with AutoOptimizationConfig.O2() (ONNX Runtime's transformer optimizer; Optimum maps
                 DeBERTa to model_type "bert", so LayerNorm/GELU fusions apply and attention stays unfused)
  3. quantize    ORTQuantizer with AutoQuantizationConfig.avx512_vnni(is_static=False) (dynamic INT8: u8
                 activations, symmetric per-channel s8 weights), applied to the optimized model

Usage: python optimum_baseline.py CKPT_DIR OUT_DIR [--task TASK]; prints one JSON line {"fp32": path, "int8": path,
"versions": {...}} on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

TASKS = {"classification": "text-classification", "regression": "text-classification",
         "embeddings": "feature-extraction", "masked-lm": "fill-mask"}


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("optimum", "optimum-onnx", "transformers", "torch", "onnxruntime", "onnx"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def build(checkpoint: str | Path, out_dir: str | Path, task: str = "text-classification") -> dict:
    """Export, optimize (O2) and dynamically quantize `checkpoint` into out_dir/{export,fp32,int8}."""
    from optimum.exporters.onnx import main_export
    from optimum.onnxruntime import ORTOptimizer, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig, AutoQuantizationConfig

    out_dir = Path(out_dir)
    export_dir, fp32_dir, int8_dir = out_dir / "export", out_dir / "fp32", out_dir / "int8"
    main_export(str(checkpoint), output=str(export_dir), task=task, do_validation=False, local_files_only=True)
    ORTOptimizer.from_pretrained(str(export_dir)).optimize(
        optimization_config=AutoOptimizationConfig.O2(), save_dir=str(fp32_dir))
    fp32 = next(fp32_dir.glob("*.onnx"))
    ORTQuantizer.from_pretrained(str(fp32_dir), file_name=fp32.name).quantize(
        quantization_config=AutoQuantizationConfig.avx512_vnni(is_static=False), save_dir=str(int8_dir))
    int8 = next(p for p in int8_dir.glob("*.onnx") if "quantized" in p.name)
    return {"fp32": str(fp32), "int8": str(int8), "versions": versions(),
            "recipe": {"export": f"optimum main_export task={task}", "optimize": "ORTOptimizer O2 (model_type bert)",
                       "quantize": "ORTQuantizer avx512_vnni dynamic (u8 activations, s8 symmetric per-channel)"}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("out_dir")
    p.add_argument("--task", default="text-classification")
    a = p.parse_args(argv)
    result = build(a.checkpoint, a.out_dir, a.task)
    sys.stdout.write("DEBX-OPTIMUM " + json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
