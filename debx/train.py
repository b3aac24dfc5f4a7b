"""The fine-tuning recipe: AdamW, linear warmup and decay, gradient clipping, dynamic padding, periodic dev
evaluation keeping the best checkpoint, resumable, deterministic for a seed, and data-parallel under torchrun.

Output folder (a Hugging Face checkpoint that `transformers` itself loads):
    OUT/config.json, OUT/model.safetensors, tokenizer files    the best checkpoint by the task's primary dev metric
    OUT/train_log.jsonl                                          one JSON line per logging step and per evaluation
    OUT/metrics.json                                             final figures (best dev metrics, time, steps)
    OUT/last/                                                    resume state (model, optimizer, scheduler, RNG, step)
                                                                 as safetensors + JSON: nothing in it can run code

Under torchrun, --batch-size is the global batch: each of the W processes takes every W-th row of each global batch
and the loss is scaled so that the averaged gradient equals the single-process one. Each process computes on its own
GPU (cuda:LOCAL_RANK, nccl) or on the CPU (gloo): see debx/device.py. --precision bf16|fp16 trains under autocast
(fp16 with a GradScaler); the weights, the optimizer and the saved checkpoints stay float32.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from debx import device as devices
from debx.artifacts import atomic_dir, check_writable, publish, write_json_atomic
from debx.contract import input_names
from debx.checkpoint import load_model, save_checkpoint
from debx.errors import ConfigError, DataError, check_at_least
from debx.metrics import compute_metrics, predictions_from_outputs
from debx.model import DebertaForSequenceClassification, init_weights
from debx.presets import preset as make_preset
from debx.tasks import get_task, load_split
from debx.tokenizer import MIN_VOCAB, OVERFLOW, Encoded, encode, load_tokenizer, save_tokenizer, spm_tokenizer, train_spm


@dataclass
class TrainConfig:
    task: str  # GLUE name (sst2, mrpc, ...) or a user task spec file
    output_dir: Path
    data_dir: Path | None = None  # default: $GLUE_DIR, then ../shared/glue
    model: Path | None = None  # checkpoint folder to fine-tune ...
    preset: str | None = None  # ... or a preset to train from scratch (tiny, xsmall, small, base, large)
    tokenizer: Path | None = None  # from scratch: an spm.model; default trains one on the task's training text
    vocab_size: int = 8000  # size of the trained SentencePiece vocabulary
    epochs: float = 3.0
    lr: float | None = None  # default: 2e-5 fine-tuning, 1e-3 from scratch
    batch_size: int = 32  # global batch (all processes together), before gradient accumulation
    max_seq_len: int = 128
    warmup: float = 0.06  # < 1: fraction of the optimizer steps; >= 1: a number of steps
    grad_accum: int = 1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 42
    eval_every: int = 0  # optimizer steps between dev evaluations; 0: once per epoch
    log_every: int = 50
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    dropout: float | None = None  # override hidden and attention dropout
    resume: bool = False
    stop_after: int | None = None  # stop (resumably) after this many optimizer steps in this run
    overflow: str = "truncate"  # sequences over max_seq_len: "truncate" (warn) or "refuse"
    threads: int | None = None
    progress: bool = True
    device: str = "auto"  # cpu | cuda | auto (cuda when PyTorch sees a GPU); under torchrun: cuda:LOCAL_RANK
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast for the training forward pass (fp16: with a GradScaler)

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        self.device = devices.check_device_name(self.device)
        self.precision = devices.check_precision_name(self.precision)
        if (self.model is None) == (self.preset is None):
            raise ConfigError("give exactly one of --model CKPT_DIR (fine-tune) or --preset NAME (from scratch)")
        for name in ("batch_size", "grad_accum", "max_seq_len", "max_train_samples", "max_eval_samples", "threads",
                     "stop_after", "log_every"):
            check_at_least(f"--{name.replace('_', '-')}", getattr(self, name))
        check_at_least("--eval-every", self.eval_every, 0)
        check_at_least("--vocab-size", self.vocab_size, MIN_VOCAB)
        for name in ("epochs", "lr"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"--{name} must be a finite number > 0, got {value}")
        for name in ("warmup", "weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.overflow not in OVERFLOW:
            raise ConfigError(f"--overflow {self.overflow!r}: choose one of {', '.join(OVERFLOW)}")
        check_writable(self.output_dir, "--output")
        if self.lr is None:
            self.lr = 2e-5 if self.model is not None else 1e-3


def _setup_distributed(cfg: TrainConfig) -> devices.DistPlan:
    """This process's rank, device and backend (nccl on cuda:LOCAL_RANK, gloo on the CPU); refuses a precision the
    device cannot train in before anything starts."""
    plan = devices.dist_plan(cfg.device)
    devices.check_precision(cfg.precision, plan.device)
    devices.init_distributed(plan)
    return plan


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _label_array(examples) -> np.ndarray:
    labels = [e.label for e in examples]
    if any(lab is None for lab in labels):
        raise DataError("the split has unlabeled rows; training and evaluation need labels")
    return np.asarray(labels)


@dataclass
class Prepared:
    model: DebertaForSequenceClassification
    tokenizer: object
    train: Encoded
    train_labels: np.ndarray
    dev: Encoded
    dev_labels: np.ndarray
    task: object
    notes: list[str] = field(default_factory=list)


def prepare(cfg: TrainConfig, scratch_dir: Path, tokenizer_path: Path | None = None) -> Prepared:
    """Validate every input and build model, tokenizer and encoded data before anything is written to OUT."""
    task = get_task(cfg.task)
    train_ex = load_split(task, cfg.data_dir, "train", limit=cfg.max_train_samples)
    dev_ex = load_split(task, cfg.data_dir, "dev", limit=cfg.max_eval_samples)
    if not train_ex or not dev_ex:
        raise DataError(f"{task.name}: empty {'train' if not train_ex else 'dev'} split")
    notes: list[str] = []
    id2label = task.id2label if not task.is_regression else {0: "score"}
    problem = "regression" if task.is_regression else "single_label_classification"
    if cfg.model is not None:
        model, ckpt = load_model(cfg.model, "classification", num_labels=task.num_labels, id2label=id2label,
                                 problem_type=problem, new_head_ok=True)
        tokenizer = load_tokenizer(cfg.model)
        notes.append(f"fine-tuning {cfg.model} ({ckpt.fingerprint})")
    else:
        if (tokenizer_path or cfg.tokenizer) is not None:
            tokenizer = load_tokenizer(tokenizer_path or cfg.tokenizer)
        else:
            texts = [e.text_a for e in train_ex] + [e.text_b for e in train_ex if e.text_b]
            spm_file = train_spm(texts, scratch_dir / "spm.model", vocab_size=cfg.vocab_size, seed=cfg.seed)
            tokenizer = spm_tokenizer(spm_file)
            notes.append(f"trained a {len(tokenizer)}-piece SentencePiece tokenizer on {task.name} train")
        overrides = {}
        if cfg.dropout is not None:
            overrides = {"hidden_dropout_prob": cfg.dropout, "attention_probs_dropout_prob": cfg.dropout}
        mcfg = make_preset(cfg.preset, vocab_size=len(tokenizer), num_labels=task.num_labels, id2label=id2label,
                           problem_type=problem, **overrides)
        torch.manual_seed(cfg.seed)
        model = init_weights(DebertaForSequenceClassification(mcfg), mcfg.initializer_range)
    if cfg.dropout is not None:
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = cfg.dropout
    # only absolute position embeddings (position_biased_input) limit the length; relative positions take any
    model.config.check_length(cfg.max_seq_len, "--max-seq-len")
    train = encode(tokenizer, [e.text_a for e in train_ex], [e.text_b for e in train_ex] if train_ex[0].text_b is not None else None,
                   cfg.max_seq_len, cfg.overflow)
    dev = encode(tokenizer, [e.text_a for e in dev_ex], [e.text_b for e in dev_ex] if dev_ex[0].text_b is not None else None,
                 cfg.max_seq_len, cfg.overflow)
    for name, enc in (("train", train), ("dev", dev)):
        if enc.truncated:
            notes.append(f"warning: {enc.truncated} {name} example(s) truncated to {cfg.max_seq_len} tokens")
    return Prepared(model, tokenizer, train, _label_array(train_ex), dev, _label_array(dev_ex), task, notes)


def _to_torch(batch: dict[str, np.ndarray], with_types: bool, device=None) -> dict[str, torch.Tensor]:
    names = input_names(1 if with_types else 0)
    return {k: torch.from_numpy(batch[k]).to(device) for k in names}


@torch.no_grad()
def predict(model, data: Encoded, batch_size: int = 64) -> np.ndarray:
    """Logits for every example, batching by length (sorted) to waste little on padding; original order returned."""
    model.eval()
    device = next(model.parameters()).device
    order = np.argsort([len(x) for x in data.input_ids], kind="stable")
    with_types = model.config.type_vocab_size > 0
    outs = np.zeros((len(data), model.config.num_labels), dtype=np.float32)
    for s in range(0, len(order), batch_size):
        rows = order[s:s + batch_size]
        outs[rows] = model(**_to_torch(data.batch(rows), with_types, device)).float().cpu().numpy()
    return outs


def evaluate_model(model, data: Encoded, labels: np.ndarray, task) -> dict[str, float]:
    return compute_metrics(task, predictions_from_outputs(task, predict(model, data)), labels)


def _optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-6)


def _schedule(opt, total: int, warmup: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def _rng_state(device=None) -> dict:
    s = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device is not None and torch.device(device).type == "cuda":  # dropout on the GPU draws from its own generator
        s["cuda"] = torch.cuda.get_rng_state(device)
    return s


def _set_rng_state(s: dict, device=None) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if "cuda" in s and device is not None and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(s["cuda"], device)


class _Log:
    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, **rec) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(rec) + "\n")


def train(cfg: TrainConfig) -> dict:
    """Run the recipe; returns the final metrics dict (also written to OUT/metrics.json)."""
    dist = _setup_distributed(cfg)
    device = dist.device
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    _seed_everything(cfg.seed)
    out = cfg.output_dir
    last_dir = out / "last"
    if cfg.resume:
        check_resume_state(last_dir)
    if not cfg.resume and out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty: choose a new --output folder or pass --resume")

    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        # on resume from a preset, the tokenizer (hence the model shape) is the one saved with the resume state
        prep = prepare(cfg, Path(scratch), tokenizer_path=last_dir if cfg.resume and cfg.preset else None)
        model, task = prep.model.to(device), prep.task
        tok_dir = Path(scratch) / "tokenizer"
        save_tokenizer(prep.tokenizer, tok_dir)
        if dist.main:
            out.mkdir(parents=True, exist_ok=True)
        log = _Log(out / "train_log.jsonl", dist.main)
        for n in prep.notes:
            if dist.main:
                print(n)
        if dist.main and cfg.progress:  # an info line: -q (progress off) leaves it out
            print(f"device: {devices.describe_device(device)} · precision {cfg.precision} · {dist.world} process(es)"
                  + (f" ({dist.backend})" if dist.backend else ""))
        n_train = len(prep.train)
        global_batch = cfg.batch_size
        steps_per_epoch = math.ceil(n_train / (global_batch * cfg.grad_accum))
        total_steps = max(1, int(round(steps_per_epoch * cfg.epochs)))
        warmup = int(cfg.warmup * total_steps) if cfg.warmup < 1 else int(cfg.warmup)
        eval_every = cfg.eval_every or steps_per_epoch
        opt = _optimizer(model, cfg)
        sched = _schedule(opt, total_steps, warmup)
        scaler = devices.grad_scaler(cfg.precision, device)
        state = {"step": 0, "best": None, "best_metrics": None, "epoch_perm_seed": cfg.seed, "elapsed": 0.0}
        if cfg.resume:
            saved = load_resume_state(last_dir)
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            sched.load_state_dict(saved["scheduler"])
            state = saved["state"]
            if "scaler" in saved and scaler.is_enabled():
                scaler.load_state_dict(saved["scaler"])
            _set_rng_state(saved["rng"], device)
            if dist.main:
                print(f"resumed at step {state['step']} of {total_steps}")
        ddp_model = model
        if dist.world > 1:
            ddp_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        with_types = model.config.type_vocab_size > 0
        is_reg = task.is_regression

        def micro_batches(step: int):
            """Rows of this optimizer step, as (rows of this rank) per accumulation micro-step; same on every rank."""
            epoch = step // steps_per_epoch
            perm = np.random.RandomState(cfg.seed + epoch).permutation(n_train)
            start = (step % steps_per_epoch) * global_batch * cfg.grad_accum
            for a in range(cfg.grad_accum):
                rows = perm[start + a * global_batch: start + (a + 1) * global_batch]
                if len(rows):
                    yield rows[dist.rank::dist.world], len(rows)

        primary = task.primary_metric
        progress = None
        if cfg.progress and dist.main:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            progress = Progress(TextColumn("[bold]train[/] {task.completed}/{task.total}"), BarColumn(),
                                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn())
            progress.start()
            bar = progress.add_task("train", total=total_steps, completed=state["step"], info="")
        t0 = time.perf_counter() - state["elapsed"]
        seen_tokens = 0
        t_window = time.perf_counter()
        seqs_window = 0
        run_loss = None
        stop_at = total_steps if cfg.stop_after is None else min(total_steps, state["step"] + cfg.stop_after)
        try:
            while state["step"] < stop_at:
                step = state["step"]
                ddp_model.train()
                opt.zero_grad(set_to_none=True)
                loss_val = 0.0
                for rows, n_global in micro_batches(step):
                    if len(rows) == 0:
                        continue
                    batch = prep.train.batch(rows)
                    b = _to_torch(batch, with_types, device)
                    y = torch.from_numpy(prep.train_labels[rows]).to(device)
                    with devices.autocast(cfg.precision, device):
                        logits = ddp_model(**b)
                    logits = logits.float()  # the loss in float32 whatever the autocast dtype
                    if is_reg:
                        per = torch.nn.functional.mse_loss(logits.squeeze(-1), y.float(), reduction="sum")
                    else:
                        per = torch.nn.functional.cross_entropy(logits, y.long(), reduction="sum")
                    loss = per * dist.world / (n_global * cfg.grad_accum)  # DDP averages over ranks
                    scaler.scale(loss).backward()
                    loss_val += per.item() / n_global / cfg.grad_accum
                    seen_tokens += int(batch["attention_mask"].sum())
                    seqs_window += len(rows) * dist.world
                if cfg.max_grad_norm > 0:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                scaler.step(opt)
                scaler.update()
                sched.step()
                state["step"] = step = step + 1
                run_loss = loss_val if run_loss is None else 0.9 * run_loss + 0.1 * loss_val
                if progress is not None:
                    dt = max(1e-9, time.perf_counter() - t_window)
                    progress.update(bar, completed=step, info=f"loss {run_loss:.4f}  {seqs_window / dt:.0f} seq/s")
                if step % cfg.log_every == 0 or step == total_steps:
                    dt = max(1e-9, time.perf_counter() - t_window)
                    log.write(step=step, epoch=round(step / steps_per_epoch, 3), loss=round(run_loss, 5),
                              lr=sched.get_last_lr()[0], seq_per_s=round(seqs_window / dt, 1),
                              elapsed_s=round(time.perf_counter() - t0, 1))
                    t_window, seqs_window = time.perf_counter(), 0
                if step % eval_every == 0 or step == total_steps or step == stop_at:
                    if dist.main:
                        metrics = evaluate_model(model, prep.dev, prep.dev_labels, task)
                        log.write(step=step, epoch=round(step / steps_per_epoch, 3), dev=metrics,
                                  elapsed_s=round(time.perf_counter() - t0, 1))
                        msg = "  ".join(f"{k} {v:.2f}" for k, v in metrics.items())
                        if progress is not None:
                            progress.console.print(f"step {step}: dev {msg}")
                        if state["best"] is None or metrics[primary] > state["best"]:
                            state["best"], state["best_metrics"] = metrics[primary], metrics
                            state["best_step"] = step
                            save_checkpoint(model, out / "best.tmp", tokenizer_dir=tok_dir)
                            _swap_best(out)
                        state["elapsed"] = time.perf_counter() - t0
                        _save_resume(last_dir, model, opt, sched, state, tok_dir, scaler, device)
                    devices.barrier(dist)
        finally:
            if progress is not None:
                progress.stop()
        elapsed = time.perf_counter() - t0
        if state["step"] < total_steps:  # stopped early on request: resumable, no final metrics yet
            if dist.main:
                print(f"stopped at step {state['step']} of {total_steps}; continue with --resume")
            return {"task": task.name, "stopped_at": state["step"], "steps": total_steps, "dev": None}
        result = {
            "task": task.name, "primary_metric": primary, "best": state["best"], "best_step": state.get("best_step"),
            "dev": state["best_metrics"], "steps": total_steps, "epochs": cfg.epochs, "train_examples": n_train,
            "dev_examples": len(prep.dev), "train_seconds": round(elapsed, 1), "world_size": dist.world,
            "tokens_seen": seen_tokens * dist.world, "device": devices.describe_device(device),
            "precision": cfg.precision, "config": {k: str(v) for k, v in asdict(cfg).items()},
        }
        if dist.main:
            write_json_atomic(out / "metrics.json", result)
        return result


def _swap_best(out: Path) -> None:
    """Move the files of OUT/best.tmp into OUT itself (OUT is the best checkpoint), replacing the previous best:
    as one unit (debx.artifacts.publish), never the old config.json with the new weights; the weights last."""
    tmp = out / "best.tmp"
    with publish(out / "model.safetensors") as pub:
        for f in tmp.iterdir():
            if f.is_file():  # linked, not moved: best.tmp stays whole until the new best is in place
                staged = pub.primary if f.name == "model.safetensors" else pub.add(out / f.name)
                try:
                    os.link(f, staged)
                except OSError:  # no hard links on this filesystem
                    shutil.copy2(f, staged)
    shutil.rmtree(tmp)


# Resume state: tensors in safetensors, everything else in JSON. Neither format can carry code, so loading a
# tampered last/ cannot run anything (torch.load of a pickle could). The JSON tree marks what JSON cannot say
# itself: tensors and arrays (by key into the safetensors file), tuples, and dicts with non-string keys.
RESUME_JSON = "trainer_state.json"
RESUME_TENSORS = "trainer_state.safetensors"
LEGACY_RESUME = "trainer_state.pt"


def _encode_tree(obj, tensors: dict[str, torch.Tensor]):
    if isinstance(obj, torch.Tensor):
        key = str(len(tensors))
        tensors[key] = obj.detach().cpu().clone().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": _encode_tree(torch.from_numpy(obj.copy()), tensors)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode_tree(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode_tree(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode_tree(v, tensors) for k, v in obj.items()}
        return {"__items__": [[_encode_tree(k, tensors), _encode_tree(v, tensors)] for k, v in obj.items()]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"resume state: cannot store a {type(obj).__name__}")


def _decode_tree(obj, tensors: dict[str, torch.Tensor]):
    if isinstance(obj, list):
        return [_decode_tree(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return _decode_tree(obj["__ndarray__"], tensors).numpy()
    if "__tuple__" in obj:
        return tuple(_decode_tree(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_decode_tree(k, tensors): _decode_tree(v, tensors) for k, v in obj["__items__"]}
    return {k: _decode_tree(v, tensors) for k, v in obj.items()}


def check_resume_state(last_dir: Path) -> None:
    """ConfigError unless `last_dir` holds resume state this version reads (a legacy pickle is refused unread)."""
    if (last_dir / RESUME_JSON).is_file() and (last_dir / RESUME_TENSORS).is_file():
        return
    if (last_dir / LEGACY_RESUME).is_file():
        raise ConfigError(f"--resume: {last_dir / LEGACY_RESUME} is a pickle from an older debx; pickles can run "
                          "code when loaded, so it is not read: start the run again without --resume")
    raise ConfigError(f"--resume: no resume state in {last_dir}")


def save_resume_state(d: Path, state: dict) -> None:
    """Write `state` (nested dicts/lists/tuples of tensors, arrays and JSON scalars) as safetensors + JSON in `d`."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    tree = _encode_tree(state, tensors)
    save_file(tensors, str(d / RESUME_TENSORS), metadata={"format": "pt"})
    (d / RESUME_JSON).write_text(json.dumps({"format": "debx-resume/1", "state": tree}) + "\n")


def load_resume_state(last_dir: Path) -> dict:
    """The state `save_resume_state` wrote; nothing in the files is executed."""
    from safetensors.torch import load_file

    check_resume_state(last_dir)
    try:
        tree = json.loads((last_dir / RESUME_JSON).read_text())
        tensors = load_file(str(last_dir / RESUME_TENSORS))
        if tree.get("format") != "debx-resume/1":
            raise ValueError(f"unknown format {tree.get('format')!r}")
        return _decode_tree(tree["state"], tensors)
    except Exception as e:  # json, safetensors and a malformed tree raise many kinds
        raise ConfigError(f"--resume: unreadable resume state in {last_dir} ({str(e).splitlines()[0][:120]})") from None


def _save_resume(last_dir: Path, model, opt, sched, state, tok_dir: Path, scaler=None, device=None) -> None:
    extra = {"scaler": scaler.state_dict()} if scaler is not None and scaler.is_enabled() else {}
    with atomic_dir(last_dir) as d:
        save_resume_state(d, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                              "scheduler": sched.state_dict(), "state": state, "rng": _rng_state(device), **extra})
        save_checkpoint(model, d / "ckpt", tokenizer_dir=tok_dir)
        for f in tok_dir.iterdir():
            if f.is_file():
                (d / f.name).write_bytes(f.read_bytes())
