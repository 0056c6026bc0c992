"""The rough-map maths (method §2 steps 5–6) on tiny tensors whose answers are known by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_clipsam.clip.rough_map import anomaly_from_logits, to_image_resolution, training_free_logits


def test_training_free_logits_are_scaled_cosines_with_the_text_rows():
    T = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # row 0 normal, row 1 anomalous (norms differ: normalised away)
    tokens = torch.tensor([[[[3.0, 0.0], [0.0, 5.0]], [[1.0, 1.0], [-1.0, 0.0]]]])  # (1, 2, 2, 2)
    z = training_free_logits(tokens, T, temperature=0.01)
    assert z.shape == (1, 2, 2, 2)  # (B, classes, h, w)
    c = 1 / math.sqrt(2)
    expected_normal = torch.tensor([[1.0, 0.0], [c, -1.0]]) * 100
    expected_anomalous = torch.tensor([[0.0, 1.0], [c, 0.0]]) * 100
    assert torch.allclose(z[0, 0], expected_normal, atol=1e-4)
    assert torch.allclose(z[0, 1], expected_anomalous, atol=1e-4)


def test_anomaly_is_the_mean_over_layers_of_the_anomalous_softmax():
    a = torch.zeros(1, 2, 2, 2)  # equal logits: p = 0.5 everywhere
    b = torch.zeros(1, 2, 2, 2)
    b[0, 1] = math.log(3.0)  # softmax → anomalous 3/4 everywhere
    out = anomaly_from_logits([a, b], size=2)
    assert out.shape == (1, 2, 2)
    assert torch.allclose(out, torch.full((1, 2, 2), (0.5 + 0.75) / 2))


def test_anomaly_upsamples_each_layer_to_the_input_size():
    lg = torch.zeros(2, 2, 1, 1)
    lg[1, 1] = 50.0  # second image: anomalous probability ~1
    out = anomaly_from_logits([lg], size=4)
    assert out.shape == (2, 4, 4)
    assert torch.allclose(out[0], torch.full((4, 4), 0.5)) and torch.all(out[1] > 0.999)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_to_image_resolution_keeps_a_constant_map_and_clips_to_unit_range():
    flat = torch.full((8, 8), 0.3)
    out = to_image_resolution(flat, (5, 13))
    assert out.shape == (5, 13) and out.dtype == np.float32
    assert np.allclose(out, 0.3)
    spiky = torch.zeros(8, 8)
    spiky[4, 4] = 1.0
    smoothed = to_image_resolution(spiky, (8, 8), sigma_at_518=518 / 8)  # σ = 1 CLIP pixel at S = 8
    assert smoothed.max() < 0.5 and smoothed[4, 4] == smoothed.max()  # smoothing spreads the peak
    assert np.isclose(to_image_resolution(spiky, (8, 8)).max(), 1.0)  # σ = 0: unsmoothed
    assert to_image_resolution(torch.full((4, 4), 1.5), (4, 4)).max() == pytest.approx(1.0)
