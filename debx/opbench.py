"""`debx bench --op attention`: the fused CUDA attention op timed side by side with what a GPU user has instead.

Op level (the attention core alone, same inputs for every entry):
    debx          torch.ops.debx.disentangled_attention (debx.kernels: the Triton tensor-core kernel)
    eager         debx.model.disentangled_attention, the PyTorch math (index precomputed, as a model would)
    sdpa-bias     PyTorch SDPA with the c2p + p2c bias materialized as an (B, H, N, N) mask
    flash-floor   flash SDPA without the relative terms + the two position products: a floor no exact op reaches
Layer level (Q/K/V projections + position tables + attention of one v3-base-shaped layer, same weights):
    debx-layer, disentangled-flash-layer, flashdeberta-layer (the peers when they are installed)
Every number is the median over single calls, each timed with CUDA events and synchronized before the next one, so
it is the latency one request sees, host overhead included (triton.testing.do_bench in scripts/gpu_attention.py
overlaps calls and reports device time). All entries run in one process on one GPU; each shape also records the
fused op's max abs difference from the float32 math on the same inputs.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Callable

from debx.errors import ConfigError, MissingDependencyError

OP_ENTRIES = ("debx", "eager", "sdpa-bias", "flash-floor")
LAYER_ENTRIES = ("debx-layer", "disentangled-flash-layer", "flashdeberta-layer")
DTYPES = ("fp16", "bf16", "fp32")


@dataclass
class OpBenchConfig:
    """What `debx bench --op attention` times. Defaults: DeBERTa-v3-base's attention (12 heads of 64, 256 log
    buckets over 512 positions), FP16."""

    op: str = "attention"
    batches: tuple[int, ...] = (1, 8)
    seqs: tuple[int, ...] = (128,)
    device: str | None = "cuda"
    dtype: str = "fp16"
    heads: int = 12
    head_size: int = 64
    span: int = 256
    position_buckets: int = 256
    max_relative_positions: int = 512
    compare: tuple[str, ...] = OP_ENTRIES + LAYER_ENTRIES
    warmup: int = 10
    iters: int = 50
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.op != "attention":
            raise ConfigError(f"--op {self.op!r}: the only op debx times is 'attention'")
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype {self.dtype!r}: choose one of {', '.join(DTYPES)}")
        unknown = [c for c in self.compare if c not in OP_ENTRIES + LAYER_ENTRIES]
        if unknown:
            raise ConfigError(f"--compare {','.join(unknown)}: with --op attention choose from "
                              f"{', '.join(OP_ENTRIES + LAYER_ENTRIES)}")
        for name in ("heads", "head_size", "span", "warmup", "iters"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if min(self.batches) < 1 or min(self.seqs) < 1:
            raise ConfigError("--batch and --seq must be positive")


def _timer(fn: Callable[[], object], warmup: int, iters: int) -> float:
    """Median milliseconds of `fn` on the current CUDA stream (events around each call, after `warmup` calls)."""
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _sdpa_with_bias(q, k, v, pk, pq, mask, index, heads: int, scale: float):
    import torch
    import torch.nn.functional as F

    B, N, HD = q.shape
    D = HD // heads
    qh, kh, vh = (t.view(B, N, heads, D).transpose(1, 2) for t in (q, k, v))  # (B, H, N, D)
    idx = index.expand(B, heads, N, N)
    c2p = torch.gather(qh @ pk.view(-1, heads, D).permute(1, 2, 0), -1, idx)  # (B, H, N, N)
    p2c = torch.gather(kh @ pq.view(-1, heads, D).permute(1, 2, 0), -1, idx.transpose(-1, -2)).transpose(-1, -2)
    keep = mask.bool()[:, None, :, None] & mask.bool()[:, None, None, :]
    bias = ((c2p + p2c) * scale).masked_fill(~keep, -65504.0)
    return F.scaled_dot_product_attention(qh, kh, vh, attn_mask=bias, scale=scale).transpose(1, 2).reshape(B, N, HD)


def _flash_floor(q, k, v, pk, pq, heads: int, scale: float):
    import torch.nn.functional as F

    B, N, HD = q.shape
    D = HD // heads
    qh, kh, vh = (t.view(B, N, heads, D).transpose(1, 2) for t in (q, k, v))
    qh @ pk.view(-1, heads, D).permute(1, 2, 0)  # the two position products an exact op needs at least
    kh @ pq.view(-1, heads, D).permute(1, 2, 0)
    return F.scaled_dot_product_attention(qh, kh, vh, scale=scale).transpose(1, 2).reshape(B, N, HD)


def _hf_config(cfg: OpBenchConfig, max_len: int):
    import transformers

    return transformers.DebertaV2Config(
        vocab_size=1000, hidden_size=cfg.heads * cfg.head_size, num_hidden_layers=1, num_attention_heads=cfg.heads,
        intermediate_size=4 * cfg.heads * cfg.head_size, max_position_embeddings=max(512, max_len),
        relative_attention=True, position_buckets=cfg.position_buckets,
        max_relative_positions=cfg.max_relative_positions, pos_att_type=["p2c", "c2p"], share_att_key=True,
        norm_rel_ebd="layer_norm", position_biased_input=False, type_vocab_size=0, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0)


def _layers(cfg: OpBenchConfig, device, dtype, progress) -> dict[str, object]:
    """{entry: callable(x, mask) -> None} for the layer-level entries that can run here (peers only if installed)."""
    import torch

    from debx.model import DebertaConfig, DebertaModel, relative_index

    max_len = max(cfg.seqs)
    hf_cfg = _hf_config(cfg, max_len)
    out = {}
    torch.manual_seed(cfg.seed)
    ours = DebertaModel(DebertaConfig.from_hf_dict(hf_cfg.to_dict())).to(device=device, dtype=dtype).eval()
    enc = ours.encoder
    if "debx-layer" in cfg.compare:
        attn = enc.layer[0].attention.self

        def debx_layer(x, mask):
            n = x.shape[1]
            return attn(x, mask, enc.rel_embedding(), relative_index(enc.rel_index_table, n))

        out["debx-layer"] = debx_layer
    state = {k.removeprefix("deberta."): v for k, v in ours.state_dict().items()}
    if "disentangled-flash-layer" in cfg.compare:
        try:
            import transformers
            from disentangled_flash import optimize_deberta

            hf = transformers.DebertaV2Model(hf_cfg).to(device=device, dtype=dtype).eval()
            hf.load_state_dict(state, strict=False)
            optimize_deberta(hf, sequence_lengths=sorted(set(cfg.seqs)))
            hf.encoder.prepare_for_inference(sorted(set(cfg.seqs)))
            dattn = hf.encoder.layer[0].attention.self
            drel = hf.encoder.get_rel_embedding()

            def df_layer(x, mask, _enc=hf.encoder):
                _enc.activate_shape(x.shape[1])
                return dattn(x, mask, rel_embeddings=drel)

            out["disentangled-flash-layer"] = df_layer
        except Exception as e:  # noqa: BLE001 - an optional peer: say why it is missing
            progress(f"disentangled-flash-layer skipped: {type(e).__name__}: {str(e)[:160]}")
    if "flashdeberta-layer" in cfg.compare:
        try:
            import transformers
            from flashdeberta import FlashDebertaV2Model

            fd = FlashDebertaV2Model(hf_cfg).to(device=device, dtype=dtype).eval()
            fd.load_state_dict(state, strict=False)
            fattn = fd.encoder.layer[0].attention.self
            frel = fd.encoder.get_rel_embedding()
            out["flashdeberta-layer"] = lambda x, mask: fattn(x, mask, rel_embeddings=frel)
        except Exception as e:  # noqa: BLE001
            progress(f"flashdeberta-layer skipped: {type(e).__name__}: {str(e)[:160]}")
    return out


def run_op_bench(cfg: OpBenchConfig, progress: Callable[[str], None] = lambda m: None) -> dict:
    """Time every entry at every (batch, seq); returns the report (rows of milliseconds, parity, machine)."""
    import torch

    from debx.device import describe_device, resolve_device

    device = resolve_device(cfg.device)
    if device.type != "cuda":
        raise MissingDependencyError("--op attention times the fused CUDA kernel: it needs --device cuda (a GPU); "
                                     "the CPU kernels are timed through .onnx engines (--engine)")
    from debx.kernels import attention_triton, torch_op

    if not attention_triton.available():
        raise MissingDependencyError("--op attention needs Triton (pip install triton)")
    from debx.model import disentangled_attention, relative_index, relative_index_table

    torch.cuda.set_device(device)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[cfg.dtype]
    H, D = cfg.heads, cfg.head_size
    HD, P = H * D, 2 * cfg.span
    scale = 1.0 / math.sqrt(D * 3)
    layers = _layers(cfg, device, dtype, progress) if any(c in LAYER_ENTRIES for c in cfg.compare) else {}
    rows = []
    for B in cfg.batches:
        for N in cfg.seqs:
            g = torch.Generator(device=device).manual_seed(cfg.seed + B * 7919 + N)
            q, k, v = (torch.randn(B, N, HD, device=device, generator=g).to(dtype) for _ in range(3))
            pk, pq = (torch.randn(P, HD, device=device, generator=g).to(dtype) for _ in range(2))
            mask = torch.ones(B, N, dtype=torch.long, device=device)
            T = relative_index_table(N, cfg.span, cfg.position_buckets, cfg.max_relative_positions, device=device)
            index = relative_index(T, N)
            args = (cfg.span, cfg.position_buckets, cfg.max_relative_positions, True, True)
            attrs = dict(num_heads=H, scale=scale, span=cfg.span, position_buckets=cfg.position_buckets,
                         max_relative_positions=cfg.max_relative_positions)
            fns = {
                "debx": lambda: torch.ops.debx.disentangled_attention(q, k, v, pk, pq, mask, T, H, scale, *args),
                "eager": lambda: disentangled_attention(q, k, v, pk, pq, mask, **attrs, index=index),
                "sdpa-bias": lambda: _sdpa_with_bias(q, k, v, pk, pq, mask, index, H, scale),
                "flash-floor": lambda: _flash_floor(q, k, v, pk, pq, H, scale),
            }
            row = {"batch": B, "seq": N, "ms": {}}
            with torch.inference_mode():
                want = disentangled_attention(q.float(), k.float(), v.float(), pk.float(), pq.float(), mask, **attrs,
                                              index=index)
                got = torch_op.disentangled_attention(q, k, v, pk, pq, mask, T, H, scale, *args)
                row["debx_max_abs_vs_fp32"] = (got.float() - want).abs().max().item()
                for name in OP_ENTRIES:
                    if name in cfg.compare:
                        progress(f"{B}x{N} {name}")
                        row["ms"][name] = _timer(fns[name], cfg.warmup, cfg.iters)
                x = torch.randn(B, N, HD, device=device, generator=g).to(dtype)
                for name, layer in layers.items():
                    progress(f"{B}x{N} {name}")
                    try:
                        row["ms"][name] = _timer(lambda: layer(x, mask), cfg.warmup, cfg.iters)
                    except Exception as e:  # noqa: BLE001 - a peer that cannot run this shape
                        progress(f"{name} at {B}x{N}: {type(e).__name__}: {str(e)[:160]}")
            del q, k, v, pk, pq, index
            rows.append(row)
    return {"op": cfg.op, "device": describe_device(device), "dtype": cfg.dtype, "torch": torch.__version__,
            "heads": H, "head_size": D, "span": cfg.span, "position_buckets": cfg.position_buckets,
            "max_relative_positions": cfg.max_relative_positions, "rows": rows,
            "entries": [c for c in OP_ENTRIES + LAYER_ENTRIES if any(c in r["ms"] for r in rows)]}


def op_table_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) for printing: one row per shape, one column per entry (ms), and the parity column."""
    header = ["shape", *report["entries"], "sdpa-bias / debx", "debx vs fp32"]
    rows = []
    for r in report["rows"]:
        ms = r["ms"]
        ratio = f"{ms['sdpa-bias'] / ms['debx']:.1f}x" if "sdpa-bias" in ms and "debx" in ms else "-"
        rows.append([f"{r['batch']}x{r['seq']}", *(f"{ms[e]:.3f}" if e in ms else "-" for e in report["entries"]),
                     ratio, f"{r['debx_max_abs_vs_fp32']:.1e}"])
    return header, rows
