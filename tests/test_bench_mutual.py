"""The mutual-scoring bench row (napari_clipsam/bench/mutual.py) on tiny shapes: every figure is reported, and the
one-block estimate for a large folder scales the measured block by the number of blocks."""
from napari_clipsam.bench.mutual import mutual_row


def test_mutual_row_reports_cost_and_memory():
    lines = []
    out = mutual_row(0.5, grid=4, width=16, layers=2, radii=(1, 3), subset=4, sizes=(6, 40), memory_images=30,
                     measure_up_to=10, log=lines.append)
    assert out["folders"][6]["how"] == "measured" and "scaled" in out["folders"][40]["how"]
    assert all(f["mutual_s"] > 0 and f["ratio_to_encoders"] > 0 for f in out["folders"].values())
    assert out["memory"]["images"] == 30 and out["memory"]["features_mib"] > 0 and out["memory"]["peak_mib"] > 0
    assert len(lines) == 3
