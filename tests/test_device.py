"""debx on CUDA machines, checked on the CPU: device resolution, the DDP backend/device choice, autocast training,
the ONNX Runtime provider refusal, and that everything the model builds follows the model's device.

Tests that need a real GPU are marked @pytest.mark.gpu (deselected in CI); scripts/gpu_smoke.sh is the end-to-end
check on a GPU machine.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class _MixedDevices(TorchDispatchMode):
    """Records every aten op whose tensor arguments sit on more than one device (0-dim CPU scalars excepted, as
    PyTorch itself allows them next to CUDA tensors)."""

    def __init__(self):
        super().__init__()
        self.mixed: list[tuple[str, set[str]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        devices = {t.device.type for t in tensors if not (t.device.type == "cpu" and t.dim() == 0)}
        if len(devices) > 1:
            self.mixed.append((str(func), devices))
        return func(*args, **kwargs)


def test_model_builds_everything_on_its_own_device():
    """On the meta device (a stand-in for cuda here), no op of the forward pass mixes in a CPU-made tensor:
    relative index tables, masks and position ids follow the model. Before the fix, disentangled_attention without a
    precomputed index gathered with a CPU index (a device error on CUDA)."""
    from debx.model import DebertaForSequenceClassification, disentangled_attention
    from debx.presets import preset

    cfg = preset("tiny", vocab_size=100, num_labels=2)
    model = DebertaForSequenceClassification(cfg).to("meta")
    ids = torch.ones(2, 7, dtype=torch.long, device="meta")
    q = torch.empty(2, 7, cfg.hidden_size, device="meta")
    pos = torch.empty(2 * cfg.span, cfg.hidden_size, device="meta")
    with _MixedDevices() as mode:
        logits = model(ids, torch.ones_like(ids), torch.zeros_like(ids))
        out = disentangled_attention(q, q, q, pos, pos, torch.ones(2, 7, device="meta"),
                                     num_heads=cfg.num_attention_heads, scale=1.0, span=cfg.span,
                                     position_buckets=cfg.buckets, max_relative_positions=cfg.max_relative)
    assert mode.mixed == []
    assert logits.device.type == "meta" and out.device.type == "meta"


# ---------------------------------------------------------------------------------------------------------------------
# --device resolution
# ---------------------------------------------------------------------------------------------------------------------

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from debx.device import check_precision, dist_plan, resolve_device  # noqa: E402
from debx.errors import ConfigError, MissingDependencyError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GLUE = Path(os.environ.get("GLUE_DIR") or ROOT.parent / "shared" / "glue")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto", cuda_available=False) == torch.device("cpu")
    assert resolve_device(None, cuda_available=False) == torch.device("cpu")
    assert resolve_device("auto", cuda_available=True, cuda_count=1) == torch.device("cuda", 0)
    assert resolve_device("CUDA", cuda_available=True, cuda_count=2, local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda:1", cuda_available=True, cuda_count=2) == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="no such device"):
        resolve_device("cuda:2", cuda_available=True, cuda_count=2)
    with pytest.raises(MissingDependencyError, match="--device cuda: .*use --device cpu"):
        resolve_device("cuda", cuda_available=False)
    for bad in ("gpu", "cpu:0", "cuda:x", "mps"):
        with pytest.raises(ConfigError, match="choose cpu, cuda"):
            resolve_device(bad)


@no_cuda
def test_auto_is_cpu_and_cuda_is_a_clean_error_here():
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(MissingDependencyError) as e:
        resolve_device("cuda")
    assert "\n" not in str(e.value) and e.value.exit_code == 2


# ---------------------------------------------------------------------------------------------------------------------
# torchrun: backend and device of each rank
# ---------------------------------------------------------------------------------------------------------------------


def _env(rank: int, world: int = 2) -> dict[str, str]:
    return {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world)}


def test_ddp_uses_nccl_on_one_gpu_per_rank_when_cuda_is_there():
    for rank in (0, 1):
        plan = dist_plan("auto", _env(rank), cuda_available=True, cuda_count=2)
        assert (plan.backend, plan.device, plan.rank, plan.world) == ("nccl", torch.device("cuda", rank), rank, 2)
        assert plan.main == (rank == 0)
    plan = dist_plan("cuda", _env(1), cuda_available=True, cuda_count=2)
    assert (plan.backend, plan.device) == ("nccl", torch.device("cuda", 1))


def test_ddp_uses_gloo_on_the_cpu():
    """The bug: the backend followed torch.cuda.is_available() while the model stayed on the CPU (nccl + CPU
    tensors: 'No backend type associated with device type cpu'). Now the backend follows the device."""
    for cuda in (False, True):  # --device cpu on a GPU machine is gloo too
        plan = dist_plan("cpu", _env(1), cuda_available=cuda, cuda_count=2 if cuda else 0)
        assert (plan.backend, plan.device) == ("gloo", torch.device("cpu"))
    plan = dist_plan("auto", _env(1), cuda_available=False, cuda_count=0)
    assert (plan.backend, plan.device) == ("gloo", torch.device("cpu"))


def test_single_process_has_no_process_group():
    plan = dist_plan("auto", {}, cuda_available=True, cuda_count=1)
    assert (plan.backend, plan.device, plan.world, plan.main) == (None, torch.device("cuda", 0), 1, True)
    assert dist_plan("auto", {"WORLD_SIZE": "1"}, cuda_available=False).backend is None


def test_ddp_refuses_more_ranks_than_gpus_and_a_fixed_gpu():
    with pytest.raises(ConfigError, match="LOCAL_RANK 2 has no GPU of its own"):
        dist_plan("cuda", {"RANK": "2", "LOCAL_RANK": "2", "WORLD_SIZE": "3"}, cuda_available=True, cuda_count=2)
    with pytest.raises(ConfigError, match="cuda:LOCAL_RANK"):
        dist_plan("cuda:0", _env(1), cuda_available=True, cuda_count=2)
    with pytest.raises(ConfigError, match="WORLD_SIZE"):
        dist_plan("cpu", {"WORLD_SIZE": "two"})


# ---------------------------------------------------------------------------------------------------------------------
# Mixed precision
# ---------------------------------------------------------------------------------------------------------------------


def test_precision_checks():
    assert check_precision("bf16", "cpu") == "bf16" and check_precision("FP32", "cpu") == "fp32"
    with pytest.raises(ConfigError, match="fp16 needs --device cuda"):
        check_precision("fp16", "cpu")
    with pytest.raises(ConfigError, match="choose fp32, bf16, fp16"):
        check_precision("int8", "cpu")


def test_bf16_autocast_forward_and_float32_gradients_on_cpu():
    from debx.device import autocast
    from debx.model import DebertaForSequenceClassification
    from debx.presets import preset

    torch.manual_seed(0)
    model = DebertaForSequenceClassification(preset("tiny", vocab_size=100, num_labels=2))
    ids = torch.randint(5, 100, (2, 9))
    with autocast("bf16", torch.device("cpu")):
        logits = model(ids, torch.ones_like(ids))
    assert logits.dtype == torch.bfloat16
    logits.float().sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


SMALL = dict(task="sst2", data_dir=GLUE, preset="tiny", vocab_size=600, epochs=1, batch_size=16,
             max_train_samples=48, max_eval_samples=32, max_seq_len=32, progress=False, threads=1, seed=3)


def test_bf16_training_on_cpu_then_eval_records_the_device(tmp_path):
    from safetensors.torch import load_file

    from debx.evaluate import EvalConfig, evaluate
    from debx.train import TrainConfig, train

    fp32, bf16 = tmp_path / "fp32", tmp_path / "bf16"
    r32 = train(TrainConfig(output_dir=fp32, device="cpu", **SMALL))
    r16 = train(TrainConfig(output_dir=bf16, device="auto", precision="bf16", **SMALL))
    assert (r16["precision"], r32["precision"]) == ("bf16", "fp32")
    assert r16["device"] == r32["device"] == ("cpu" if not torch.cuda.is_available() else r16["device"])
    w32, w16 = load_file(str(fp32 / "last" / "ckpt" / "model.safetensors")), load_file(str(bf16 / "last" / "ckpt" / "model.safetensors"))
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in w16.values())  # weights stay float32
    assert any(not torch.equal(w32[k], w16[k]) for k in w32)  # autocast really ran the forward pass in bf16

    res = evaluate(EvalConfig(task="sst2", engine=bf16, data_dir=GLUE, limit=16, progress=False, device="cpu"))
    assert res.report["device"] == "cpu" and res.report["runner"]["device"] == "cpu"
    # an ONNX candidate's --provider does not reach a checkpoint reference (it used to: "option(s) provider do not
    # apply to the torch runtime"), and a PyTorch candidate's --device does not reach a .onnx reference
    from debx.evaluate import reference_report

    onnx_cfg = EvalConfig(task="sst2", engine=tmp_path / "m.onnx", data_dir=GLUE, limit=16, progress=False,
                          provider="cpu")
    assert reference_report(onnx_cfg, bf16)["device"] == "cpu"


def test_fp16_on_cpu_is_refused_before_anything_is_written(tmp_path):
    from debx.train import TrainConfig, train

    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="fp16 needs --device cuda"):
        train(TrainConfig(output_dir=out, device="cpu", precision="fp16", **SMALL))
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------------------------
# ONNX Runtime providers
# ---------------------------------------------------------------------------------------------------------------------


def test_provider_refusal_and_fallback_detection():
    from debx.runtimes.onnxruntime import check_session_provider, providers_for

    assert providers_for("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for("tensorrt", ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])[0] \
        == "TensorrtExecutionProvider"
    with pytest.raises(MissingDependencyError, match="--provider tensorrt needs TensorrtExecutionProvider.*onnxruntime-gpu"):
        providers_for("tensorrt", ["CUDAExecutionProvider", "CPUExecutionProvider"])

    class FellBack:  # what ONNX Runtime hands back when the CUDA provider failed to start (a warning, no error)
        def get_providers(self):
            return ["CPUExecutionProvider"]

    with pytest.raises(MissingDependencyError, match="could not start CUDAExecutionProvider"):
        check_session_provider(FellBack(), "cuda", "m.onnx")
    check_session_provider(FellBack(), "cpu")


def _debx(*args, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "debx", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env)


def _one_line_exit_2(p: subprocess.CompletedProcess, *needles: str) -> None:
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    err = p.stderr.strip().splitlines()[-1]  # (bench prints its progress on stderr first)
    assert err.startswith("debx: error:") and p.stderr.count("debx: error:") == 1, p.stderr
    for n in needles:
        assert n in err, err


@no_cuda
def test_cli_refusals_are_one_line_exit_2(tmp_path):
    import onnxruntime as ort

    out = tmp_path / "run"
    _one_line_exit_2(_debx("train", "--task", "sst2", "--preset", "tiny", "-o", out, "--data-dir", GLUE, "--device",
                           "cuda", cwd=tmp_path), "--device cuda", "without CUDA")
    assert not out.exists()
    _one_line_exit_2(_debx("train", "--task", "sst2", "--preset", "tiny", "-o", out, "--data-dir", GLUE,
                           "--precision", "fp16", cwd=tmp_path), "fp16 needs --device cuda")
    assert not out.exists()
    model = tmp_path / "ckpt"
    model.mkdir()
    _one_line_exit_2(_debx("eval", "--task", "sst2", "--model", model, "--device", "cuda", cwd=tmp_path),
                     "--device cuda")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        (tmp_path / "m.onnx").write_bytes(b"")
        _one_line_exit_2(_debx("bench", "--engine", tmp_path / "m.onnx", "--provider", "cuda", cwd=tmp_path),
                         "--provider cuda needs CUDAExecutionProvider", "onnxruntime-gpu")


# ---------------------------------------------------------------------------------------------------------------------
# On a GPU (deselected in CI: -m "not gpu")
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
def test_model_on_cuda_matches_cpu():
    from debx.model import DebertaForSequenceClassification
    from debx.presets import preset

    torch.manual_seed(0)
    model = DebertaForSequenceClassification(preset("tiny", vocab_size=100, num_labels=2)).eval()
    ids = torch.randint(5, 100, (3, 40))
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0
    with torch.no_grad():
        cpu = model(ids, mask)
        gpu = model.to("cuda")(ids.cuda(), mask.cuda()).cpu()
    assert torch.allclose(cpu, gpu, atol=1e-4), (cpu - gpu).abs().max()


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_training_on_cuda(tmp_path, precision):
    from debx.train import TrainConfig, train

    r = train(TrainConfig(output_dir=tmp_path / precision, device="cuda", precision=precision, **SMALL))
    assert r["device"].startswith("cuda:0") and r["precision"] == precision and r["dev"]
