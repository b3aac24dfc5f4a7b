"""Calibration: INT8 (explicit Q/DQ) and FP16 models from task data, with the ranges and caches that go with them.

    data.py         deterministic calibration batches from a task split (the guids used are recorded)
    ranges.py       activation ranges with ONNX Runtime's calibrators (entropy, percentile, minmax), ranges JSON
    qdq.py          the Q/DQ placement policy (one function) and INT8 quantization with onnxruntime.quantization
    trt_cache.py    TensorRT calibration cache text: writer and reader
    fp16.py         FP16 conversion that keeps in FP32 what measured ranges say would overflow or underflow
    sensitivity.py  per-node INT8 error and the step-by-step fallback of `debx calibrate --auto`
    calibrate.py    the whole `debx calibrate` flow (CalibrateConfig -> CalibrateResult), artifacts written atomically
"""
