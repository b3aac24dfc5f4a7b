"""`debx ops-path`: the path of debx's ONNX Runtime custom-op library (libdebx_ort_ops.so), built first if needed."""

from __future__ import annotations

from debx.api import ops_library

EXAMPLES = (
    ("debx ops-path", "the path alone on stdout (a progress line on stderr when it builds)"),
    ("export DEBX_ORT_OPS=$(debx -q ops-path)", "for a service's so.register_custom_ops_library($DEBX_ORT_OPS)"),
)


def command() -> None:
    """Print the path of the native ONNX Runtime op library that runs debx's custom nodes (debx::
    DebxDisentangledAttention in `--attention debx` graphs), building it first when it is not built yet.

    For plain ONNX Runtime users:

        so = onnxruntime.SessionOptions()
        so.register_custom_ops_library("$(debx ops-path)")
        onnxruntime.InferenceSession("model.onnx", so)
    """
    print(ops_library())
