# debx on a GPU machine: NVIDIA's TensorRT container (TensorRT 10, CUDA, cuDNN, Python) + debx with the GPU extras
# + the plugin library, the ONNX Runtime op library and the C++ runtime built from plugins/.
#
#   docker build -t debx .
#   docker run --gpus all -v $PWD/../shared:/shared -e GLUE_DIR=/shared/glue debx \
#       debx build model.onnx -o model.plan --plugins /opt/debx/lib/libdebx_plugins.so
#
# What this file guarantees (tests/test_dockerfile.py parses it for each point; no Docker engine in this project's CI,
# so the image itself is not built there; see README "What ran where"):
#   - ONNX Runtime is onnxruntime-gpu only: the CPU wheel `onnxruntime` is never installed beside it (both own the
#     same `onnxruntime/` package folder; whichever is installed last silently wins), and the build fails if it is;
#   - the Python `tensorrt` is pinned to the version of the image's libnvinfer, so the bindings and the library the
#     plans are built and run with are one TensorRT;
#   - the native libraries are built portably (no -march=native; the op library picks AVX-512/VNNI/AMX code by CPUID
#     at run time), so the image runs on any x86-64 host, not only on the machine that built it;
#   - the build fails when debx_serve (or a library) is missing, instead of shipping an image without it.
ARG TRT_IMAGE=nvcr.io/nvidia/tensorrt:25.10-py3
FROM ${TRT_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends cmake g++ libsentencepiece-dev libutf8proc-dev nlohmann-json3-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/debx/src
COPY . .

# The image's TensorRT, as the Python package version it corresponds to (libnvinfer10 10.13.3.9-1+cuda13.0 -> 10.13.3.9):
# a pip constraint, so that nothing below installs other TensorRT bindings (or a second libnvinfer in site-packages).
RUN set -eu; \
    TRT_VERSION="$(dpkg-query -W -f='${Version}' libnvinfer10 | sed -E 's/^([0-9]+(\.[0-9]+)+).*/\1/')"; \
    test -n "$TRT_VERSION" || { echo "libnvinfer10 is not installed in the base image" >&2; exit 1; }; \
    mkdir -p /opt/debx; echo "tensorrt==${TRT_VERSION}" > /opt/debx/constraints.txt; \
    echo "TensorRT ${TRT_VERSION} (libnvinfer10)"

# PyTorch with CUDA comes from the regular index on a GPU image. debx's [onnx] extra names the CPU `onnxruntime`, so
# it is not installed as an extra: its other packages are read from pyproject.toml and installed with the [gpu]
# extra (onnxruntime-gpu: CUDA and TensorRT execution providers) and [trt] (tensorrt, pinned above).
RUN set -eu; \
    python -m pip install --no-cache-dir -c /opt/debx/constraints.txt torch; \
    ONNX_EXTRA="$(python -c 'import re, tomllib; deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["onnx"]; print(" ".join(d for d in deps if re.split(r"[<>=!~ \[;]", d)[0] != "onnxruntime"))')"; \
    python -m pip install --no-cache-dir -c /opt/debx/constraints.txt -e ".[gpu,trt]" $ONNX_EXTRA; \
    if python -m pip show onnxruntime >/dev/null 2>&1; then \
        echo "the CPU onnxruntime wheel got installed beside onnxruntime-gpu: remove what pulled it in" >&2; exit 1; fi; \
    python -m pip show onnxruntime-gpu >/dev/null; \
    python -c "import onnxruntime as o; p = o.get_available_providers(); assert 'CUDAExecutionProvider' in p, p"; \
    python -c "import sys, tensorrt; want = open('/opt/debx/constraints.txt').read().split('==')[1].strip(); sys.exit(0 if tensorrt.__version__ == want else 'tensorrt ' + tensorrt.__version__ + ' != libnvinfer ' + want)"

# The TensorRT headers and libraries are in the image (/usr/include/x86_64-linux-gnu, /usr/lib/x86_64-linux-gnu).
# Portable build: Release flags only (plugins/CMakeLists.txt adds per-file ISA flags to the CPUID-dispatched units).
RUN set -eu; \
    cmake -S plugins -B /opt/debx/build -DCMAKE_BUILD_TYPE=Release \
        -DTENSORRT_INCLUDE_DIR=/usr/include/x86_64-linux-gnu -DCMAKE_CUDA_ARCHITECTURES="80;86;89;90"; \
    cmake --build /opt/debx/build -j"$(nproc)"; \
    mkdir -p /opt/debx/lib /opt/debx/bin; \
    for f in libdebx_plugins.so libdebx_ort_ops.so; do \
        p="$(find /opt/debx/build -name "$f" -type f | head -n1)"; \
        test -n "$p" || { echo "$f was not built" >&2; exit 1; }; cp "$p" /opt/debx/lib/; done; \
    for f in debx_serve debx_tokenize; do \
        p="$(find /opt/debx/build -name "$f" -type f -perm -u+x | head -n1)"; \
        test -n "$p" || { echo "$f was not built (debx_serve needs libnvinfer and the CUDA toolkit: see the cmake output)" >&2; exit 1; }; \
        cp "$p" /opt/debx/bin/; done; \
    test -x /opt/debx/bin/debx_serve

# The Python side's copy of the ONNX Runtime op library (the same CMake target, configured alone), built now into the
# default cache, so that no container builds it on first use (debx ops-path prints its path).
RUN debx ops-path --build

ENV DEBX_PLUGINS=/opt/debx/lib/libdebx_plugins.so DEBX_ORT_OPS=/opt/debx/lib/libdebx_ort_ops.so PATH=/opt/debx/bin:$PATH
CMD ["debx", "--help"]
