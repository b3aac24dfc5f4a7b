"""GPU kernels: the fused disentangled attention (Triton) and the PyTorch op that wraps it.

`attention_triton` holds the kernel and its launcher; `torch_op` registers `torch.ops.debx.disentangled_attention`
(a `torch.library` custom op with a fake implementation: opaque to torch.compile, no graph break, capturable in CUDA
graphs), which `debx.model` calls when its tensors are on CUDA.
"""
