"""The mutual-scoring bench rows (napari_clipsam/bench/mutual.py) on tiny shapes: every figure is reported, the
large-folder estimate is built from measured parts, and the memory row goes through the CLI's groups."""
from napari_clipsam.bench.mutual import mutual_row


def test_mutual_row_reports_cost_profile_and_memory():
    lines = []
    out = mutual_row(0.5, grid=4, width=16, layers=2, radii=(1, 3), subset=4, sizes=(6, 40), memory_images=30,
                     group_size=12, measure_up_to=10, log=lines.append)
    assert out["folders"][6]["how"] == "measured whole" and "parts measured" in out["folders"][40]["how"]
    assert all(f["mutual_s"] > 0 and f["ratio_to_encoders"] > 0 for f in out["folders"].values())
    prof = out["profile_pair"]
    assert prof["product_s"] > 0 and prof["box_sums_r3_s"] > 0 and prof["pair_s"] > 0
    m = out["memory"]
    assert m["images"] == 30 and m["groups"] == 3 and m["peak_mib"] >= m["before_mib"] > 0
    assert len(lines) == 4 and "3 groups" in lines[-1]


def test_bf16_row_scales_one_query_block():
    out = mutual_row(0.5, grid=4, width=16, layers=1, radii=(1,), subset=4, sizes=(20,), memory_images=0,
                     fast=True, measure_up_to=10, log=lambda s: None)
    assert "query blocks" in out["folders"][20]["how"] and "memory" not in out
