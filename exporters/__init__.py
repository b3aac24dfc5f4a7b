"""exporters: debx models -> ONNX (portable, TensorRT-plugin or debx-op attention), validated against PyTorch.

    onnx_config  per-architecture I/O, axes, opsets, tolerances
    attention    the emission of each --attention mode
    export       ExportConfig, export_onnx, export_patches
    fp16         FP16 conversion with a keep-in-FP32 list and an overflow check
    validate     validate_onnx: names -> axes -> shapes -> values, all failures in one error
    checks       structural graph checks
"""
