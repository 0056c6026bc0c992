"""Render the rows of :mod:`.collect` to one self-contained HTML page (Jinja2 template, matplotlib histogram)."""
from __future__ import annotations

import base64
import io
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from ..io.atomic import AtomicBatch
from .collect import ImageRow, collect_rows

__all__ = ["render_report", "write_report", "score_histogram"]


def score_histogram(scores: list[float]) -> str | None:
    """A PNG histogram of the scores as a data URI (None without scores)."""
    if not scores:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot, no global backend switch
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(5, 2.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.hist(scores, bins=min(30, max(5, len(scores))), color="#4a7bd0", edgecolor="white", linewidth=0.8)
    ax.set_xlabel("image score")
    ax.set_ylabel("images")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts of images
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def render_report(folder: str | Path, rows: list[ImageRow] | None = None) -> str:
    """The HTML page for the labels folder ``folder``."""
    import jinja2

    rows = collect_rows(folder) if rows is None else rows
    env = jinja2.Environment(loader=jinja2.PackageLoader("napari_clipsam.report", "."),
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    per_class: Counter[str] = Counter()
    for r in rows:
        per_class.update(r.classes)
    scores = [r.score for r in rows if r.score is not None]
    return env.get_template("template.html.j2").render(
        folder=str(Path(folder).resolve()), rows=rows, n_images=len(rows),
        verdicts=sorted(Counter(r.verdict for r in rows).items()), classes=sorted(per_class.items()),
        n_unscored=len(rows) - len(scores), histogram=score_histogram(scores),
        n_unread=sum(r.n_objects is None for r in rows),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def write_report(folder: str | Path, out: str | Path) -> Path:
    """Write the report of ``folder`` to ``out`` atomically; returns the path written."""
    out = Path(out)
    html = render_report(folder)
    with AtomicBatch() as batch:
        batch.stage(out, html.encode("utf-8"))
        batch.commit()
    return out
