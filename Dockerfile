# debx on a GPU machine: NVIDIA's TensorRT container (TensorRT 10, CUDA, cuDNN, Python) + debx with the GPU extras
# + the plugin library and the C++ runtime built from plugins/.
#
#   docker build -t debx .
#   docker run --gpus all -v $PWD/../shared:/shared -e GLUE_DIR=/shared/glue debx \
#       debx build model.onnx -o model.plan --plugins /opt/debx/lib/libdebx_plugins.so
#
# Not built or run in this project's CI (no Docker engine and no GPU there); see README "What ran where".
ARG TRT_IMAGE=nvcr.io/nvidia/tensorrt:25.10-py3
FROM ${TRT_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends cmake g++ libsentencepiece-dev libutf8proc-dev nlohmann-json3-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/debx/src
COPY . .

# PyTorch with CUDA comes from the regular index on a GPU image; onnxruntime-gpu gives the CUDA/TensorRT EPs.
RUN python -m pip install --no-cache-dir torch \
    && python -m pip install --no-cache-dir -e ".[onnx,gpu,trt]"

# The TensorRT headers and libraries are in the image (/usr/include/x86_64-linux-gnu, /usr/lib/x86_64-linux-gnu).
RUN cmake -S plugins -B /opt/debx/build -DCMAKE_BUILD_TYPE=Release \
        -DTENSORRT_INCLUDE_DIR=/usr/include/x86_64-linux-gnu -DCMAKE_CUDA_ARCHITECTURES="80;86;89;90" \
    && cmake --build /opt/debx/build -j"$(nproc)" \
    && mkdir -p /opt/debx/lib /opt/debx/bin \
    && find /opt/debx/build -name 'libdebx_plugins.so' -exec cp {} /opt/debx/lib/ \; \
    && find /opt/debx/build -maxdepth 3 -type f -name 'debx_serve' -exec cp {} /opt/debx/bin/ \;

ENV DEBX_PLUGINS=/opt/debx/lib/libdebx_plugins.so PATH=/opt/debx/bin:$PATH
CMD ["debx", "--help"]
