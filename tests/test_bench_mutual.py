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


def test_rows_time_the_engines_windows_and_scale_the_estimate():
    """The default engine scores the global map and the image score's window (mutual_image_window) together:
    the rows time that, and the large-folder estimate is scaled by its measured ratio to the global score."""
    from napari_clipsam.config import ClipSAMConfig
    from napari_clipsam.engine.folder import _windows

    windows = tuple(_windows(ClipSAMConfig())[0])
    assert windows == (None, 2)
    out = mutual_row(0.5, grid=6, width=16, layers=1, radii=(1,), subset=4, sizes=(8, 40), memory_images=12,
                     group_size=12, measure_up_to=10, windows=windows, log=lambda s: None)
    assert out["windows"] == [None, 2] and "for the windows" in out["folders"][40]["how"]
    assert out["folders"][8]["mutual_s"] > 0 and out["memory"]["groups"] == 1
