"""Worst-first order and the review flags (pure functions)."""
import numpy as np

from napari_clipsam.review.flags import (ACCEPTED_HIGH, HOT_NO_OBJECT, OUTSIDE_HOT, REJECTED_LOW, ImageFacts,
                                         image_flags, score_bounds)
from napari_clipsam.review.order import load_scores, review_order, save_scores


def test_order_is_by_score_then_position_and_unscored_last():
    assert review_order(5, {0: 0.2, 1: 0.9, 2: 0.2, 4: float("nan")}) == [1, 0, 2, 3, 4]
    assert review_order(5, {0: 0.2, 1: 0.9}, worst_first=False) == [0, 1, 2, 3, 4]


def test_scores_file_round_trip_and_other_object(tmp_path):
    save_scores(tmp_path / "out", tmp_path, "plate", "mutual", {"a.png": 0.5, "b.png": 0.7})
    assert load_scores(tmp_path / "out", tmp_path, "plate") == {"a.png": 0.5, "b.png": 0.7}
    assert load_scores(tmp_path / "out", tmp_path, "bottle") == {}
    (tmp_path / "out" / "clipsam_review_scores.json").write_text("{broken")
    assert load_scores(tmp_path / "out", tmp_path, "plate") == {}


def test_flags():
    bounds = score_bounds([0.1, 0.2, 0.3, 0.8, 0.9])
    assert image_flags(ImageFacts(0.9, 0, True, 0), "accepted", 0, bounds) == [HOT_NO_OBJECT, ACCEPTED_HIGH]
    assert image_flags(ImageFacts(0.1, 2, True, 1), "rejected", None, bounds) == [OUTSIDE_HOT, REJECTED_LOW]
    assert image_flags(ImageFacts(0.5, 1, True, 0), "accepted", 1, bounds) == []
    assert score_bounds([0.1, np.nan, 0.2]) is None
