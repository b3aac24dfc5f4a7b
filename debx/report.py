"""Human-readable gate reports: a Markdown table and a PNG plot (metric per precision with the tolerance band).

matplotlib is imported only when a plot is drawn (Agg backend, no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from debx.artifacts import write_bytes_atomic
from debx.gate import GateResult

COLUMNS = ("task", "metric", "reference", "candidate", "delta", "95% CI of delta", "allowed drop", "changed",
           "n", "verdict")


def _fmt(x: float | None, digits: int = 2, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def table_rows(results: Iterable[GateResult]) -> list[list[str]]:
    rows = []
    for r in results:
        rows.append([
            r.task, r.metric, f"{_fmt(r.reference)} ({r.reference_name})", f"{_fmt(r.candidate)} ({r.candidate_name})",
            _fmt(r.delta, signed=True), f"[{_fmt(r.ci_low, signed=True)}, {_fmt(r.ci_high, signed=True)}]",
            "no gate" if r.allowed_drop is None else _fmt(r.allowed_drop),
            f"{100 * r.changed:.1f}%", str(r.n), f"**{r.verdict}**",
        ])
    return rows


def markdown_table(results: Iterable[GateResult]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
    return "\n".join(lines)


def markdown(results: Iterable[GateResult], notes: Iterable[str] = ()) -> str:
    results = list(results)
    modes = sorted({r.mode for r in results})
    out = ["# Accuracy gate", "", markdown_table(results), ""]
    out.append(f"Gate mode: {', '.join(modes)}. Delta = candidate - reference in metric points; the interval is a "
               f"paired bootstrap ({int(100 * results[0].confidence) if results else 95}%) over the examples. "
               "A candidate passes when its drop is within the allowed drop.")
    for note in notes:
        out += ["", note]
    return "\n".join(out) + "\n"


def write_markdown(path: str | Path, results: Iterable[GateResult], notes: Iterable[str] = ()) -> None:
    write_bytes_atomic(Path(path), markdown(results, notes).encode())


def plot(path: str | Path, results: Iterable[GateResult], title: str | None = None) -> None:
    """One panel per task: the reference metric, each candidate with its bootstrap interval (reference + CI of
    the delta), and the band [reference - allowed drop, reference + allowed drop]."""
    import io

    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    results = list(results)
    tasks = list(dict.fromkeys(r.task for r in results))
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 + 2.2 * max(1, len(results) // len(tasks)) * len(tasks), 3.6),
                             squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rs = [r for r in results if r.task == task]
        ref = rs[0].reference
        labels = [rs[0].reference_name] + [r.candidate_name for r in rs]
        values = [ref] + [r.candidate for r in rs]
        allowed = rs[0].allowed_drop
        if allowed is not None:
            ax.axhspan(ref - allowed, ref + allowed, color="tab:green", alpha=0.15, label=f"±{allowed:g} band")
        ax.axhline(ref, color="tab:gray", lw=1, ls="--")
        colors = ["tab:blue"] + ["tab:green" if r.passed else "tab:red" for r in rs]
        x = list(range(len(values)))
        ax.scatter(x, values, c=colors, zorder=3, s=40)
        for i, r in enumerate(rs, start=1):
            ax.errorbar(i, r.candidate, yerr=[[max(0.0, r.candidate - (ref + r.ci_low))],
                                               [max(0.0, ref + r.ci_high - r.candidate)]],
                        color=colors[i], capsize=4, lw=1)
            ax.annotate(r.verdict, (i, r.candidate), textcoords="offset points", xytext=(6, 6), fontsize=8,
                        color=colors[i])
        ax.set_xticks(x, labels, rotation=15, fontsize=8)
        ax.set_xlim(-0.5, len(values) - 0.5)
        ax.set_title(f"{task} ({rs[0].metric})", fontsize=10)
        ax.set_ylabel(rs[0].metric)
        if allowed is not None:
            ax.legend(fontsize=7, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(Path(path), buf.getvalue())
