"""`debx ops-path`: the path of debx's ONNX Runtime custom-op library (libdebx_ort_ops.so), built first if needed."""

from __future__ import annotations

import typer

from debx.api import ops_library

EXAMPLES = (
    ("debx ops-path", "the path alone on stdout (a progress line on stderr when it builds)"),
    ("debx ops-path --build", "build it now with CMake, showing its progress (e.g. in a Dockerfile, ahead of use)"),
    ("export DEBX_ORT_OPS=$(debx -q ops-path)", "for a service's so.register_custom_ops_library($DEBX_ORT_OPS)"),
)


def command(
    build: bool = typer.Option(False, "--build", help="Build the library now with CMake (plugins/CMakeLists.txt, "
                               "target debx_ort_ops), even when a good build is cached, showing CMake's progress."),
) -> None:
    """Print the path of the native ONNX Runtime op library that runs debx's custom nodes (debx::
    DebxDisentangledAttention in `--attention debx` graphs, and the INT8 CPU ops), building it with CMake first when
    it is not built yet (cached in ~/.cache/debx/ort_ops/, or $DEBX_CACHE).

    For plain ONNX Runtime users:

        so = onnxruntime.SessionOptions()
        so.register_custom_ops_library("$(debx ops-path)")
        onnxruntime.InferenceSession("model.onnx", so)
    """
    print(ops_library(rebuild=build))
