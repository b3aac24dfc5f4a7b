"""Where PyTorch work runs: `--device cpu|cuda|auto`, mixed precision for training (`--precision fp32|bf16|fp16`),
and the torchrun process group (nccl with one GPU per process, gloo on the CPU).

The choices are functions of their inputs (the device asked for, the environment torchrun sets, whether CUDA is
there), so that they are testable on a machine without a GPU. torch is imported inside the functions: `debx --help`
and the ONNX-only paths do not pay for it.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Mapping

from debx.errors import ConfigError, MissingDependencyError

DEVICES = ("auto", "cpu", "cuda")  # "cuda:N" is accepted too
PRECISIONS = ("fp32", "bf16", "fp16")
DEVICE_HELP = "PyTorch device: cpu, cuda (cuda:N) or auto (cuda when PyTorch sees a GPU, else cpu)."


def check_device_name(device: str | None) -> str:
    """The normalised spelling of a --device value (no torch import); ConfigError for anything else."""
    d = (device or "auto").strip().lower()
    base, sep, index = d.partition(":")
    if base not in DEVICES or (sep and (base != "cuda" or not index.isdigit())):
        raise ConfigError(f"--device {device!r}: choose cpu, cuda (or cuda:N) or auto")
    return d


def check_precision_name(precision: str | None) -> str:
    p = (precision or "fp32").strip().lower()
    if p not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r}: choose {', '.join(PRECISIONS)}")
    return p


def cuda_missing_reason() -> str:
    """Why PyTorch sees no CUDA device here, in a few words."""
    import torch

    if torch.version.cuda is None:
        return f"this PyTorch ({torch.__version__}) is built without CUDA"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return "PyTorch sees no CUDA device" + (f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else "")


def resolve_device(device: str | None, *, local_rank: int | None = None, cuda_available: bool | None = None,
                   cuda_count: int | None = None):
    """The torch.device for a --device value: auto is cuda when CUDA is available, else cpu; plain cuda is
    cuda:LOCAL_RANK (cuda:0 outside torchrun). cuda without a GPU is a MissingDependencyError (one line, exit 2).
    cuda_available/cuda_count: what to assume instead of asking torch (tests)."""
    import torch

    d = check_device_name(device)
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if d == "auto":
        d = "cuda" if cuda_available else "cpu"
    if d == "cpu":
        return torch.device("cpu")
    if not cuda_available:
        raise MissingDependencyError(f"--device {device}: {cuda_missing_reason()}; use --device cpu (or auto)")
    count = torch.cuda.device_count() if cuda_count is None else cuda_count
    index = int(d.split(":")[1]) if ":" in d else (local_rank or 0)
    if index >= count:
        if ":" in d:
            raise ConfigError(f"--device {device}: no such device ({count} CUDA device(s) visible)")
        raise ConfigError(f"process with LOCAL_RANK {index} has no GPU of its own ({count} CUDA device(s) visible): "
                          f"start at most {count} process(es) per node, or use --device cpu")
    return torch.device("cuda", index)


def describe_device(device) -> str:
    """'cpu' or 'cuda:0 (NVIDIA H100 80GB HBM3)': for reports and the first line of a run."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return str(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


# ---------------------------------------------------------------------------------------------------------------------
# torchrun: one process per GPU on nccl, or CPU processes on gloo
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class DistPlan:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: a single process, no process group
    device: object = None  # torch.device this process computes on

    @property
    def main(self) -> bool:
        return self.rank == 0


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"${name}={value!r} is not an integer (set by torchrun)") from None


def dist_plan(device: str | None, env: Mapping[str, str] | None = None, *, cuda_available: bool | None = None,
              cuda_count: int | None = None) -> DistPlan:
    """Rank, world size, backend and device of this process, from torchrun's environment (RANK, WORLD_SIZE,
    LOCAL_RANK) and --device. The backend follows the device: nccl when this process computes on cuda:LOCAL_RANK,
    gloo when it computes on the CPU (even on a machine with GPUs)."""
    env = os.environ if env is None else env
    world = _env_int(env, "WORLD_SIZE", 1)
    if world <= 1:
        return DistPlan(device=resolve_device(device, cuda_available=cuda_available, cuda_count=cuda_count))
    rank, local_rank = _env_int(env, "RANK", 0), _env_int(env, "LOCAL_RANK", 0)
    if ":" in check_device_name(device):
        raise ConfigError(f"--device {device}: under torchrun each process takes cuda:LOCAL_RANK; pass --device cuda")
    dev = resolve_device(device, local_rank=local_rank, cuda_available=cuda_available, cuda_count=cuda_count)
    return DistPlan(rank, world, local_rank, "nccl" if dev.type == "cuda" else "gloo", dev)


def init_distributed(plan: DistPlan) -> None:
    """Pin this process to its GPU and join the process group (no-op for a single process)."""
    import torch

    if plan.device.type == "cuda":
        torch.cuda.set_device(plan.device)
    if plan.backend is None:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(plan.backend)


def barrier(plan: DistPlan) -> None:
    import torch.distributed as dist

    if plan.backend == "nccl":
        dist.barrier(device_ids=[plan.device.index])
    elif plan.backend is not None:
        dist.barrier()


# ---------------------------------------------------------------------------------------------------------------------
# Mixed precision (training)
# ---------------------------------------------------------------------------------------------------------------------


def check_precision(precision: str, device) -> str:
    """ConfigError for a precision the device cannot train in: fp16 autocast is CUDA-only here (CPU autocast runs
    bf16), and bf16 needs a GPU that has it (Ampere or newer)."""
    import torch

    p = check_precision_name(precision)
    device = torch.device(device)
    if p == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 needs --device cuda (fp16 autocast with a GradScaler is for GPUs); "
                          "on the CPU use --precision bf16 or fp32")
    if p == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"--precision bf16: {describe_device(device)} has no bf16 support; use --precision fp16")
    return p


def autocast(precision: str, device):
    """The autocast context for a training forward pass (a no-op context for fp32)."""
    import torch

    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def grad_scaler(precision: str, device):
    """A GradScaler for fp16 (scales the loss so small fp16 gradients do not flush to zero); disabled otherwise."""
    import torch

    return torch.amp.GradScaler(torch.device(device).type, enabled=precision == "fp16")
