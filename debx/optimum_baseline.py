"""The Optimum + ONNX Runtime baselines of `debx bench --compare optimum`, built with Optimum's own API.

This file imports nothing from debx: `debx bench` runs it with the Python of the Optimum side venv
(scripts/optimum_env.sh) when Optimum cannot be imported in the main environment, and calls `build` directly when
it can. The steps an Optimum user takes:

  1. export      optimum.exporters.onnx.main_export (task text-classification / feature-extraction / fill-mask)
  2. optimize    ONNX Runtime's graph optimizer at ORT_ENABLE_ALL, saved to the file (`fp32/model_optimized.onnx`).
                 Optimum maps DeBERTa to model_type "bert", for which ORTOptimizer's O2 adds no attention fusion:
                 what it fuses (LayerNorm, SkipLayerNorm, Gelu/BiasGelu, FusedMatMul) ONNX Runtime's own C++
                 optimizer fuses as well. ORTOptimizer itself is not used by default because its Python pass runs
                 symbolic shape inference that copies the whole model (700 MB of weights at base size) for each
                 of the 12 `If` subgraphs of the transformers DeBERTa export, several times: measured here, more
                 than 30 minutes and 17 GB of memory for DeBERTa-v3-base. `--ort-optimizer` runs it anyway (O2).
  3. quantize    ORTQuantizer with AutoQuantizationConfig.avx512_vnni(is_static=False): dynamic INT8, u8
                 activations, symmetric per-channel s8 weights, all quantizable operators; applied to the exported
                 model (ONNX Runtime fuses the result at session creation: DynamicQuantizeMatMul, ...)

Usage: python optimum_baseline.py CKPT_DIR OUT_DIR [--task TASK] [--ort-optimizer]; prints one line
`DEBX-OPTIMUM {"fp32": path, "int8": path, "versions": {...}, "recipe": {...}}` on stdout.
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


def ort_optimize(src: Path, dst: Path) -> Path:
    """ONNX Runtime's graph optimizations (ORT_ENABLE_ALL, CPU) applied offline and saved to `dst`."""
    import onnxruntime as ort

    dst.parent.mkdir(parents=True, exist_ok=True)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(dst)
    so.add_session_config_entry("session.optimized_model_external_initializers_file_name", dst.name + "_data")
    so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    return dst


def build(checkpoint: str | Path, out_dir: str | Path, task: str = "text-classification",
          ort_optimizer: bool = False) -> dict:
    """Export, optimize and dynamically quantize `checkpoint` into out_dir/{export,fp32,int8}."""
    from optimum.exporters.onnx import main_export
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    out_dir = Path(out_dir)
    export_dir, fp32_dir, int8_dir = out_dir / "export", out_dir / "fp32", out_dir / "int8"
    main_export(str(checkpoint), output=str(export_dir), task=task, do_validation=False, local_files_only=True)
    exported = next(export_dir.glob("*.onnx"))
    if ort_optimizer:
        from optimum.onnxruntime import ORTOptimizer
        from optimum.onnxruntime.configuration import AutoOptimizationConfig

        ORTOptimizer.from_pretrained(str(export_dir)).optimize(
            optimization_config=AutoOptimizationConfig.O2(), save_dir=str(fp32_dir))
        fp32 = next(fp32_dir.glob("*.onnx"))
        optimize = "ORTOptimizer O2 (model_type bert)"
    else:
        fp32 = ort_optimize(exported, fp32_dir / "model_optimized.onnx")
        optimize = "onnxruntime ORT_ENABLE_ALL (CPU), saved"
    ORTQuantizer.from_pretrained(str(export_dir), file_name=exported.name).quantize(
        quantization_config=AutoQuantizationConfig.avx512_vnni(is_static=False), save_dir=str(int8_dir))
    int8 = next(p for p in int8_dir.glob("*.onnx") if "quantized" in p.name)
    return {"fp32": str(fp32), "int8": str(int8), "versions": versions(),
            "recipe": {"export": f"optimum main_export task={task}", "optimize": optimize,
                       "quantize": "ORTQuantizer avx512_vnni dynamic (u8 activations, s8 symmetric per-channel "
                                   "weights) of the exported model"}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("out_dir")
    p.add_argument("--task", default="text-classification")
    p.add_argument("--ort-optimizer", action="store_true", help="use Optimum's ORTOptimizer (O2); slow, see above")
    a = p.parse_args(argv)
    result = build(a.checkpoint, a.out_dir, a.task, a.ort_optimizer)
    sys.stdout.write("DEBX-OPTIMUM " + json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
