"""``eval --plots DIR``: per-category ROC and PR curves and a bar chart of the metrics, as PNG files.

Drawn with matplotlib's object API on the Agg canvas (no display, no pyplot state, no global backend switch) from
the curves :func:`~napari_clipsam.training.evaluation.evaluate_dataset` keeps with ``curves=True``. Per category
``<name>_pixel_roc.png`` and ``<name>_pixel_pr.png`` (pooled pixels), ``<name>_image_roc.png`` and
``<name>_image_pr.png`` (only where the category has normal and defective images), ``<name>_metrics.png`` (every
metric of each map as bars), and ``mean_metrics.png`` for the mean over categories. Each curve's legend gives the
metric the table reports (AUROC, AP), not an area recomputed from the plotted points. All files are written in one
all-or-nothing batch; files of the same names are replaced.
"""
from __future__ import annotations

import io
import math
import re
from pathlib import Path

from ..io.atomic import AtomicBatch

__all__ = ["plot_names", "write_eval_plots"]

COLOURS = {"rough": "#d07a2a", "final": "#2a62b8"}
LABELS = {"rough": "rough map", "final": "final map"}
#: Metrics in the bar chart, with the short names of the printed table.
BARS = (("pixel_auroc", "pAUROC"), ("pixel_f1_max", "pF1max"), ("pixel_ap", "pAP"), ("aupro_official", "PRO"),
        ("aupro_published", "PRO-pub"), ("image_auroc", "iAUROC"), ("image_f1_max", "iF1max"), ("image_ap", "iAP"))
CURVES = {"roc": ("fpr", "tpr", "false positive rate", "true positive rate", "auroc", "AUROC"),
          "pr": ("recall", "precision", "recall", "precision", "ap", "AP")}


def safe_name(category: str) -> str:
    """A file-name stem for a category: letters, digits, ``-`` and ``_`` kept, anything else as ``_`` (a category
    named ``mean`` becomes ``category_mean``, so it never takes the mean's file)."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", category).strip("_") or "category"
    return "category_mean" if stem == "mean" else stem


def plot_names(results: dict) -> dict[str, list[str]]:
    """Category → the file names :func:`write_eval_plots` writes for it (``"mean"`` → the mean's bar chart)."""
    out = {}
    for cat, r in results["categories"].items():
        stem, names = safe_name(cat), []
        for level in ("pixel", "image"):
            if any((r.get("curves", {}).get(m) or {}).get(level) for m in COLOURS):
                names += [f"{stem}_{level}_roc.png", f"{stem}_{level}_pr.png"]
        out[cat] = names + [f"{stem}_metrics.png"]
    out["mean"] = ["mean_metrics.png"]
    return out


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _curve_png(title: str, r: dict, level: str, kind: str) -> bytes:
    xk, yk, xlabel, ylabel, metric, short = CURVES[kind]
    fig = _figure()
    ax = fig.add_subplot()
    for m, colour in COLOURS.items():
        curve = (r.get("curves", {}).get(m) or {}).get(level)
        if not curve:
            continue
        value = r[m][f"{level}_{'auroc' if metric == 'auroc' else 'ap'}"]
        label = LABELS[m] + ("" if value is None or math.isnan(value) else f" ({short} {100 * value:.1f})")
        wide = m == "rough"  # drawn wide and pale under the final map's line, so equal curves both show
        ax.plot(curve[kind][xk], curve[kind][yk], color=colour, lw=4.0 if wide else 1.5, alpha=0.55 if wide else 1.0,
                label=label, drawstyle="steps-post" if kind == "pr" else "default")
    if kind == "roc":
        ax.plot([0, 1], [0, 1], color="#999999", lw=0.8, ls="--", label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}: {level} {kind.upper()}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right" if kind == "roc" else "best", fontsize=8)
    return _png(fig)


def _bars_png(title: str, r: dict) -> bytes:
    import numpy as np

    maps = [m for m in COLOURS if r.get(m)]
    fig = _figure()
    fig.set_size_inches(7.0, 3.8)
    ax = fig.add_subplot()
    x = np.arange(len(BARS))
    width = 0.8 / max(1, len(maps))
    for j, m in enumerate(maps):
        vals = [r[m][k] for k, _ in BARS]
        heights = [0.0 if v is None or math.isnan(v) else 100 * v for v in vals]
        bars = ax.bar(x + (j - (len(maps) - 1) / 2) * width, heights, width, color=COLOURS[m], label=LABELS[m])
        for b, v in zip(bars, vals):
            text = "n/a" if v is None or math.isnan(v) else f"{100 * v:.0f}"
            ax.annotate(text, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom",
                        fontsize=6, xytext=(0, 1), textcoords="offset points")
    ax.set_xticks(x, [s for _, s in BARS], fontsize=8)
    ax.set_ylim(0, 108)
    ax.set_ylabel("%")
    ax.set_title(f"{title}: metrics")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right", ncols=len(maps))
    return _png(fig)


def write_eval_plots(results: dict, folder: str | Path) -> list[Path]:
    """Write the plots of an evaluation (:func:`~napari_clipsam.training.evaluation.evaluate_dataset`'s result,
    computed with ``curves=True``; without curves only the bar charts) into ``folder`` (created if missing), all or
    nothing. Returns the paths written."""
    folder = Path(folder).expanduser()
    files: dict[Path, bytes] = {}
    names = plot_names(results)
    for cat, r in results["categories"].items():
        for name in names[cat]:
            if name.endswith("_metrics.png"):
                files[folder / name] = _bars_png(cat, r)
            else:
                level, kind = name[:-4].rsplit("_", 2)[-2:]
                files[folder / name] = _curve_png(cat, r, level, kind)
    files[folder / "mean_metrics.png"] = _bars_png("mean over categories", results["mean"])
    with AtomicBatch() as batch:
        for path, data in files.items():
            batch.stage(path, data)
        batch.commit()
    return list(files)
