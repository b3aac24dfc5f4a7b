"""One comparator for every backend (in the spirit of Polygraphy's): feed all runners the same inputs, then compare
each candidate's outputs with the reference's, output by output."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np

from debx.runtimes.base import Runner


@dataclass
class Case:
    """One named set of feeds (input_ids, attention_mask[, token_type_ids]), all int64 (B, N)."""

    name: str
    feeds: dict[str, np.ndarray]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.feeds["input_ids"].shape)  # type: ignore[return-value]


@dataclass
class OutputDiff:
    case: str
    output: str
    ref_shape: tuple[int, ...]
    shape: tuple[int, ...] | None  # None: the candidate did not produce this output
    max_abs_diff: float | None
    finite: bool
    argmax_total: int = 0  # rows (classification) or real tokens (masked LM) compared by argmax
    argmax_same: int = 0
    argmax_near_ties: int = 0  # differing argmax where the reference's top-2 margin is within the tie margin

    def to_dict(self) -> dict:
        return asdict(self)


def compare_output(case: Case, name: str, ref: np.ndarray, cand: np.ndarray | None, argmax: str | None,
                   tie_margin: float = 0.0) -> OutputDiff:
    """argmax: None, "rows" (one prediction per example) or "tokens" (one per real token, using the mask).

    tie_margin: a differing argmax counts as a near tie when the reference's top-2 logits are at most this far
    apart (two values each within a tolerance t of the reference can swap only when their margin is <= 2t).
    """
    if cand is None:
        return OutputDiff(case.name, name, tuple(ref.shape), None, None, True)
    finite = bool(np.isfinite(cand).all())
    if cand.shape != ref.shape:
        return OutputDiff(case.name, name, tuple(ref.shape), tuple(cand.shape), None, finite)
    diff = float(np.abs(cand.astype(np.float64) - ref.astype(np.float64)).max()) if ref.size else 0.0
    out = OutputDiff(case.name, name, tuple(ref.shape), tuple(cand.shape), diff if finite else float("inf"), finite)
    if argmax and ref.ndim >= 2 and ref.shape[-1] > 1:
        same = ref.argmax(-1) == cand.argmax(-1)  # (B,) or (B, N)
        top2 = np.sort(ref, axis=-1)[..., -2:]
        tie = (top2[..., 1] - top2[..., 0]) <= tie_margin  # (B,) or (B, N)
        if argmax == "tokens":
            real = case.feeds["attention_mask"].astype(bool)
            same, tie = same[real], tie[real]
        out.argmax_total, out.argmax_same = int(same.size), int(same.sum())
        out.argmax_near_ties = int((~same & tie).sum())
    return out


class Comparator:
    """Runs the same cases through a reference runner and candidates; returns every output's difference."""

    def __init__(self, reference: Runner, *candidates: Runner):
        self.reference = reference
        self.candidates = candidates

    def run(self, cases: Sequence[Case], argmax: Mapping[str, str | None] | None = None, tie_margin: float = 0.0
            ) -> dict[str, list[OutputDiff]]:
        """{candidate name: [OutputDiff per case and reference output]}; runners must be active."""
        argmax = argmax or {}
        results: dict[str, list[OutputDiff]] = {c.name: [] for c in self.candidates}
        for case in cases:
            ref = self.reference.infer(case.feeds)
            for cand in self.candidates:
                got = cand.infer(case.feeds)
                for name, value in ref.items():
                    results[cand.name].append(
                        compare_output(case, name, value, got.get(name), argmax.get(name), tie_margin))
        return results
