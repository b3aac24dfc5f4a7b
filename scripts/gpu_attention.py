"""Check and time the fused CUDA attention (debx.kernels) on an NVIDIA GPU, side by side with the alternatives.
The op-level table is also `debx bench --op attention` (same baselines, from debx.opbench); this script adds the
float64 correctness sweep, tile-configuration sweeps and the whole-model / torch.compile comparisons.

    python scripts/gpu_attention.py correct            # float64 reference: v1, v3, c2p-only, p2c-only, N 1..2048
    python scripts/gpu_attention.py op                 # op latency at v3-base shapes (H=12, D=64, FP16)
    python scripts/gpu_attention.py layer              # one attention layer (projections + op) vs DisentangledFlash
    python scripts/gpu_attention.py model              # whole v3-base FP16 forward: debx vs transformers / peers
    python scripts/gpu_attention.py compile            # the same under torch.compile(mode="reduce-overhead")
Options: --shapes 1x128,8x128 --out results.json. Peers (disentangled_flash, flashdeberta) are used when importable.
Median of triton.testing.do_bench (CUDA events); every number in one process, one GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from debx.kernels import attention_triton  # noqa: E402
from debx.model import disentangled_attention, relative_index, relative_index_table  # noqa: E402
from debx.opbench import _flash_floor as flash_lower_bound  # noqa: E402
from debx.opbench import _sdpa_with_bias as sdpa_with_bias  # noqa: E402

SHAPES = [(1, 128), (8, 128), (32, 128), (8, 512), (1, 2048), (4, 2048)]
V3 = dict(span=256, position_buckets=256, max_relative_positions=512)
V1 = dict(span=512, position_buckets=0, max_relative_positions=512)
CASES = {"v1": (V1, True, True), "v3": (V3, True, True), "c2p-only": (V3, True, False), "p2c-only": (V3, False, True)}


def bench(fn, warmup=25, rep=100) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def make(B, N, H=12, D=64, span=256, dtype=torch.float16, pad=True, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    HD = H * D
    q, k, v = (torch.randn(B, N, HD, device="cuda", generator=g, dtype=torch.float32) for _ in range(3))
    pk, pq = (torch.randn(2 * span, HD, device="cuda", generator=g, dtype=torch.float32) for _ in range(2))
    mask = torch.ones(B, N, dtype=torch.long, device="cuda")
    if pad and B > 1:
        mask[0, N - N // 3:] = 0  # padded tail
        mask[-1, :] = 0  # a fully padded row
    return [t.to(dtype) for t in (q, k, v, pk, pq)], mask


def attrs(H, D, spec, c2p, p2c):
    factor = 1 + int(c2p) + int(p2c)
    return dict(num_heads=H, scale=1.0 / math.sqrt(D * factor), c2p=c2p, p2c=p2c, **spec)


def cmd_correct(args) -> list[dict]:
    rows = []
    lens = [1, 7, 64, 129, 333, 512, 700, 1024, 2048]
    for name, (spec, c2p, p2c) in CASES.items():
        for n in lens:
            for dtype in (torch.float16, torch.bfloat16, torch.float32):
                if dtype == torch.float32 and n > 700:
                    continue
                (q, k, v, pk, pq), mask = make(2, n, span=spec["span"], dtype=dtype, seed=n)
                a = attrs(12, 64, spec, c2p, p2c)
                index = relative_index(relative_index_table(n, spec["span"], spec["position_buckets"],
                                                            spec["max_relative_positions"]).cuda(), n)
                ref = disentangled_attention(*(t.double() for t in (q, k, v, pk, pq)), mask, **a, index=index)
                out = torch.full_like(q, float("nan"))
                out.copy_(attention_triton.attention(q, k, v, pk, pq, mask, **a))
                err = (out.double() - ref).abs().max().item()
                rel = ((out.double() - ref).norm() / ref.norm()).item()
                finite = bool(torch.isfinite(out).all())
                tol = {torch.float16: 2e-2, torch.bfloat16: 6e-2, torch.float32: 1e-4}[dtype]
                ok = finite and err <= tol
                rows.append(dict(case=name, n=n, dtype=str(dtype).split(".")[-1], max_abs=err, rel=rel, ok=ok))
    bad = [r for r in rows if not r["ok"]]
    for dt in ("float16", "bfloat16", "float32"):
        sel = [r for r in rows if r["dtype"] == dt]
        print(f"correct {dt}: {len(sel) - len([r for r in sel if not r['ok']])}/{len(sel)} ok, "
              f"max abs {max(r['max_abs'] for r in sel):.2e}, max rel {max(r['rel'] for r in sel):.2e}")
    for r in bad:
        print("FAIL", r)
    return rows


def cmd_op(args) -> list[dict]:
    rows = []
    configs = [None, (64, 32, 4, 3), (128, 32, 4, 2), (64, 64, 4, 2), (128, 64, 4, 2), (128, 64, 8, 2), (128, 128, 8, 2),
               (64, 64, 4, 3)]
    for B, N in args.shapes:
        (q, k, v, pk, pq), mask = make(B, N, dtype=torch.float16, pad=False)
        a = attrs(12, 64, V3, True, True)
        index = relative_index(relative_index_table(N, 256, 256, 512).cuda(), N)
        row = dict(shape=f"{B}x{N}")
        table = attention_triton.relative_table(N, 256, 256, 512, q.device)
        for cfg in configs:
            kw = {} if cfg is None else dict(block_q=cfg[0], block_k=cfg[1], num_warps=cfg[2], num_stages=cfg[3])
            label = "debx" if cfg is None else "debx@" + "-".join(map(str, cfg))
            try:
                row[label] = bench(lambda: attention_triton.attention(q, k, v, pk, pq, mask, **a, **kw, table=table))
            except Exception as e:  # noqa: BLE001 - a config that does not fit this shape
                row[label] = None
                print(f"  {label} {B}x{N}: {type(e).__name__}: {str(e)[:120]}")
        a0 = dict(a, c2p=False, p2c=False)
        row["debx-no-relative"] = bench(lambda: attention_triton.attention(q, k, v, pk, pq, mask, **a0, table=table))
        lo, hi = attention_triton.table_rows(N, 256, 256, 512)
        row["band-products"] = bench(lambda: (attention_triton.band_products(q, pk[lo:hi + 1], 12),
                                              attention_triton.band_products(k, pq[lo:hi + 1], 12)))
        row["eager"] = bench(lambda: disentangled_attention(q, k, v, pk, pq, mask, **a, index=index))
        row["sdpa+bias"] = bench(lambda: sdpa_with_bias(q, k, v, pk, pq, mask, index, 12, a["scale"]))
        row["flash-no-bias"] = bench(lambda: flash_lower_bound(q, k, v, pk, pq, 12, a["scale"]))
        best = min((val, key) for key, val in row.items()
                   if key.startswith("debx") and key != "debx-no-relative" and isinstance(val, float))
        row["best"] = best[1]
        rows.append(row)
        print(" ".join(f"{key}={val:.3f}" if isinstance(val, float) else f"{key}={val}" for key, val in row.items()),
              flush=True)
    return rows


def hf_v3_base(n_labels=2):
    import transformers

    transformers.logging.set_verbosity_error()
    cfg = transformers.DebertaV2Config(
        vocab_size=128100, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        # v3-base's bucket math (max_relative_positions 512) with room for 2048-token inputs in every model
        max_position_embeddings=2048, relative_attention=True, position_buckets=256, max_relative_positions=512,
        pos_att_type=["p2c", "c2p"], share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False,
        type_vocab_size=0, layer_norm_eps=1e-7, num_labels=n_labels, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    return transformers.DebertaV2ForSequenceClassification(cfg).eval()


def models(kinds):
    """{name: callable(input_ids, mask)} for the requested kinds, all v3-base FP16 on CUDA with the same weights."""
    from debx.checkpoint import load_model

    hf = hf_v3_base()
    tmp = Path(tempfile.mkdtemp())
    hf.save_pretrained(tmp / "ckpt")
    out = {}
    if "hf" in kinds:
        m = hf_v3_base().half().cuda()
        m.load_state_dict(hf.state_dict())
        out["transformers"] = m
    if "debx" in kinds:
        m, _ = load_model(tmp / "ckpt")
        out["debx"] = m.half().cuda().eval()
    if "debx-eager" in kinds:
        m, _ = load_model(tmp / "ckpt")
        m = m.half().cuda().eval()
        for mod in m.modules():
            if hasattr(mod, "fused_cuda"):
                mod.fused_cuda = False
        out["debx-eager"] = m
    if "df" in kinds:
        try:
            from disentangled_flash import optimize_deberta

            m = hf_v3_base().half().cuda()
            m.load_state_dict(hf.state_dict())
            optimize_deberta(m.deberta, sequence_lengths=sorted({n for _, n in SHAPES}))
            enc = m.deberta.encoder
            if hasattr(enc, "prepare_for_inference"):
                enc.eval().prepare_for_inference(sorted({n for _, n in SHAPES}))
            out["disentangled-flash"] = m
        except Exception as e:  # noqa: BLE001
            print(f"  disentangled_flash unavailable: {type(e).__name__}: {str(e)[:200]}")
    if "fd" in kinds:
        try:
            from flashdeberta import FlashDebertaV2ForSequenceClassification

            m = FlashDebertaV2ForSequenceClassification.from_pretrained(tmp / "ckpt").half().cuda().eval()
            out["flashdeberta"] = m
        except Exception as e:  # noqa: BLE001
            print(f"  flashdeberta unavailable: {type(e).__name__}: {str(e)[:200]}")
    return out


def logits(m, ids, mask):
    o = m(input_ids=ids, attention_mask=mask)
    return o.logits if hasattr(o, "logits") else o


def cmd_model(args, compile_mode=None) -> list[dict]:
    kinds = ["hf", "debx"] if compile_mode else ["hf", "debx", "debx-eager", "df", "fd"]
    ms = models(kinds)
    rows = []
    for B, N in args.shapes:
        g = torch.Generator(device="cuda").manual_seed(B * N)
        ids = torch.randint(5, 128000, (B, N), device="cuda", generator=g)
        mask = torch.ones(B, N, dtype=torch.long, device="cuda")
        row = dict(shape=f"{B}x{N}")
        ref = None
        for name, m in ms.items():
            try:
                fn = m
                if hasattr(getattr(getattr(m, "deberta", None), "encoder", None), "activate_shape"):
                    m.deberta.encoder.activate_shape(N)  # DisentangledFlash: its prepared plan for this length
                t0 = time.time()
                if compile_mode:
                    torch._dynamo.reset()
                    fn = torch.compile(m, mode=compile_mode)
                with torch.inference_mode():
                    y = logits(fn, ids, mask).float()
                    y = logits(fn, ids, mask).float()
                    if compile_mode:
                        row[f"{name}-compile-s"] = round(time.time() - t0, 1)
                    row[name] = bench(lambda: logits(fn, ids, mask), warmup=50, rep=200)
                if ref is None:
                    ref = y
                else:
                    row[f"{name}-maxdiff"] = (y - ref).abs().max().item()
            except Exception as e:  # noqa: BLE001
                row[name] = None
                print(f"  {name} {B}x{N}: {type(e).__name__}: {str(e)[:300]}")
        if compile_mode and "debx" in ms:
            try:
                torch._dynamo.reset()
                ex = torch._dynamo.explain(ms["debx"])(input_ids=ids, attention_mask=mask)
                row["debx-graph-breaks"] = ex.graph_break_count
            except Exception as e:  # noqa: BLE001
                print(f"  explain: {type(e).__name__}: {str(e)[:200]}")
        rows.append(row)
        print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    return rows


def cmd_layer(args) -> list[dict]:
    """One attention layer (projections + op) of v3-base: debx with the fused op vs DisentangledFlash's layer."""
    ms = models(["debx", "df"])
    rows = []
    for B, N in args.shapes:
        x = torch.randn(B, N, 768, device="cuda", dtype=torch.float16)
        mask = torch.ones(B, N, dtype=torch.long, device="cuda")
        row = dict(shape=f"{B}x{N}")
        with torch.inference_mode():
            enc = ms["debx"].deberta.encoder
            attn = enc.layer[0].attention.self
            rel = enc.rel_embedding()
            index = relative_index(enc.rel_index_table, N) if hasattr(enc, "rel_index_table") else None
            row["debx-layer"] = bench(lambda: attn(x, mask, rel, index))
            if "disentangled-flash" in ms:
                try:
                    denc = ms["disentangled-flash"].deberta.encoder
                    denc.activate_shape(N)
                    dattn = denc.layer[0].attention.self
                    drel = denc.get_rel_embedding() if hasattr(denc, "get_rel_embedding") else None
                    row["df-layer"] = bench(lambda: dattn(x, mask, rel_embeddings=drel))
                except Exception as e:  # noqa: BLE001
                    print(f"  df layer: {type(e).__name__}: {str(e)[:300]}")
        rows.append(row)
        print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="+", choices=["correct", "op", "layer", "model", "compile"])
    p.add_argument("--shapes", default=",".join(f"{b}x{n}" for b, n in SHAPES))
    p.add_argument("--out", default=None)
    args = p.parse_args()
    args.shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    if not torch.cuda.is_available():
        sys.exit("gpu_attention: needs a CUDA GPU")
    print(f"device {torch.cuda.get_device_name()} torch {torch.__version__}", flush=True)
    results = {}
    for what in args.what:
        t0 = time.time()
        if what == "correct":
            results[what] = cmd_correct(args)
        elif what == "op":
            results[what] = cmd_op(args)
        elif what == "layer":
            results[what] = cmd_layer(args)
        elif what == "model":
            results[what] = cmd_model(args)
        elif what == "compile":
            results[what] = cmd_model(args, compile_mode="reduce-overhead")
        print(f"[{what}] {time.time() - t0:.0f} s", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
