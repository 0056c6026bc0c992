"""Few-shot normal references (issue 11): the bank maths on tiny tensors, the engine hooks, the on-disk cache, and
the quality measurement on the synthetic categories with the tiny random CLIP at 224 px."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from napari_clipsam.clip.fewshot import AUGMENTATIONS, NormalBank, augmented_views, greedy_coreset, neighbourhood_mean
from napari_clipsam.clip.references import bank_cache_path
from napari_clipsam.config import ClipSAMConfig
from napari_clipsam.data.synthetic import CATEGORIES, CATEGORY_DEFECTS, _image_seed, synthetic_image
from napari_clipsam.metrics.pixel import pixel_auroc
from napari_clipsam.engine.clipsam import ClipSAM
from napari_clipsam.testing import make_tiny_clip, make_tiny_sam, tiny_engine

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------------ pure maths
def test_augmented_views_are_the_documented_flips_and_rotations():
    im = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    assert augmented_views(im, False)[0] is im and len(augmented_views(im, False)) == 1
    views = augmented_views(im, True)
    assert len(views) == len(AUGMENTATIONS) == 6
    expected = [im, im[::-1], im[:, ::-1], np.rot90(im, 1), np.rot90(im, 2), np.rot90(im, 3)]
    for v, e in zip(views, expected):
        np.testing.assert_array_equal(v, e)
        assert v.flags.c_contiguous


def test_neighbourhood_mean_keeps_constants_and_averages_a_window():
    t = torch.full((1, 2, 5, 5), 3.0)
    torch.testing.assert_close(neighbourhood_mean(t, 3), t)
    assert neighbourhood_mean(t, 1) is t
    spike = torch.zeros(1, 1, 5, 5)
    spike[0, 0, 2, 2] = 9.0
    out = neighbourhood_mean(spike, 3)
    assert float(out[0, 0, 2, 2]) == pytest.approx(1.0) and float(out[0, 0, 1, 1]) == pytest.approx(1.0)
    assert float(out[0, 0, 0, 0]) == 0.0
    corner = torch.zeros(1, 1, 5, 5)
    corner[0, 0, 0, 0] = 4.0
    assert float(neighbourhood_mean(corner, 3)[0, 0, 0, 0]) == pytest.approx(1.0)  # 4 pixels inside at a corner
    with pytest.raises(ValueError, match="odd"):
        neighbourhood_mean(t, 2)


def test_greedy_coreset_is_deterministic_and_covers_better_than_random():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 16, generator=g)
    x[17] += 50.0  # an outlier: the k-centre coreset must keep it
    keep = greedy_coreset(x, 40)
    assert keep.shape == (40,) and len(set(keep.tolist())) == 40
    assert torch.equal(keep, greedy_coreset(x, 40))
    assert 17 in keep.tolist()
    assert torch.equal(greedy_coreset(x, 600), torch.arange(600))

    def radius(idx):  # the farthest any point is from the kept set
        return float(torch.cdist(x, x[idx]).min(dim=1).values.max())

    rand = torch.randperm(600, generator=g)[:40]
    assert radius(keep) < radius(rand)


def _texture(g, views, size=6, channels=8, kinds=5):
    """(views, C, size, size) tokens drawn from a few prototype vectors plus a little noise (a "texture")."""
    protos = torch.randn(kinds, channels, generator=g)
    idx = torch.randint(kinds, (views, size, size), generator=g)
    return (protos[idx] + 0.05 * torch.randn(views, size, size, channels, generator=g)).permute(0, 3, 1, 2)


def _bank(tokens, bank_size=10_000, neighbourhood=1):
    return NormalBank.build(tokens, tuple(range(1, len(tokens) + 1)), ["k"], bank_size=bank_size,
                            neighbourhood=neighbourhood)


def test_bank_scores_a_reference_as_normal_and_a_foreign_patch_as_anomalous():
    g = torch.Generator().manual_seed(1)
    refs = [_texture(g, 3) for _ in range(2)]  # 2 layers, 3 views
    bank = _bank(refs)
    assert bank.layers == (1, 2) and bank.patches_per_layer == 3 * 36 and bank.views == 3
    # a reference view itself: every patch is in the bank → distance 0 → map 0
    same = [r[1:2] for r in refs]
    for d in bank.distances(same):
        assert float(d.max()) < 1e-5
    assert float(bank.anomaly_map(same, 24).max()) < 1e-4
    # a patch replaced by something no reference has gets the highest score, ≥ 0.5 (beyond the calibration scale)
    odd = [r[1:2].clone() for r in refs]
    for o in odd:
        o[0, :, 4, 1] = 40.0 * torch.randn(8, generator=g)
    d = bank.distances(odd)
    for layer in d:
        assert torch.argmax(layer[0]).item() == 4 * 6 + 1
    m = bank.anomaly_map(odd, 6)
    assert float(m[0, 4, 1]) >= 0.5 and float(m.min()) >= 0.0 and float(m.max()) <= 1.0
    with pytest.raises(ValueError, match="channels"):
        bank.distances([torch.zeros(1, 4, 6, 6), torch.zeros(1, 4, 6, 6)])


def test_bank_is_reduced_to_its_size_and_round_trips_exactly():
    g = torch.Generator().manual_seed(2)
    refs = [_texture(g, 2, size=5)]
    bank = _bank(refs, bank_size=20, neighbourhood=3)
    assert bank.patches_per_layer == 20 and bank.neighbourhood == 3
    again = NormalBank.from_bytes(bank.to_bytes())
    assert again.layers == bank.layers and again.reference_keys == ["k"] and again.views == 2
    q = [torch.randn(1, 8, 5, 5, generator=g)]
    torch.testing.assert_close(again.anomaly_map(q, 10), bank.anomaly_map(q, 10), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------ engine hooks
def _images(category="metal", n=2, size=64, defect=None, start=0):
    return [synthetic_image(category, defect, size, start + i)[0] for i in range(n)]


def test_fused_rough_map_is_the_documented_mix_and_provenance_records_it():
    test = _images(defect="stain", start=50)
    zero = tiny_engine().rough_maps_for_images(test, "metal plate")
    maps = {}
    for w in (0.3, 1.0):
        engine = tiny_engine(fewshot_weight=w, fewshot_augment=False)
        info = engine.set_normal_references(_images(), "metal plate")
        maps[w] = engine.rough_maps_for_images(test, "metal plate")
        assert info["count"] == 2 and info["weight"] == w and len(info["references"][0]) == 32
        res = engine.segment(test[0], "metal plate")
        np.testing.assert_allclose(res.rough_map, maps[w][0], atol=1e-6)
        assert res.provenance["fewshot"]["references"] == info["references"]
        assert f"few-shot (2 normal references, weight {w:g})" in res.provenance["rough_map"]
        # references apply to their object only
        other = engine.segment(test[0], "fabric")
        assert other.provenance["fewshot"] is None and "few-shot" not in other.provenance["rough_map"]
        np.testing.assert_allclose(other.rough_map, tiny_engine().segment(test[0], "fabric").rough_map, atol=1e-6)
    for z, f, m in zip(zero, maps[1.0], maps[0.3]):
        np.testing.assert_allclose(m, 0.7 * z + 0.3 * f, atol=1e-5)
        assert not np.allclose(z, f, atol=0.05)


def test_clearing_references_gives_the_zero_shot_map_back(engine):
    im = _images(start=9)[0]
    before = engine.segment(im, "metal plate").rough_map
    engine.set_normal_references(_images())  # object_name None: for every object
    assert engine.normal_references("anything")["count"] == 2
    assert not np.allclose(engine.segment(im, "metal plate").rough_map, before, atol=1e-3)
    engine.clear_normal_references()
    assert engine.normal_references() is None and engine.reference_sets() == {}
    np.testing.assert_allclose(engine.segment(im, "metal plate").rough_map, before, atol=1e-6)


def test_umci_engine_fuses_references_too(umci_engine):
    im = _images(start=9)[0]
    before = umci_engine.segment(im, "metal plate").rough_map
    umci_engine.set_normal_references(_images(), "metal plate")
    after = umci_engine.segment(im, "metal plate")
    assert after.provenance["mode"] == "umci" and not np.allclose(after.rough_map, before, atol=1e-3)


def test_reference_bank_is_cached_on_disk_by_content_and_model(tmp_path, caplog):
    refs = _images()
    engine = tiny_engine()
    engine.set_normal_references(refs, "metal plate")
    assert engine.cache_info().reference_banks.misses == 1  # built by CLIP from 2 references × 6 views
    fresh = tiny_engine()
    fresh.set_normal_references(list(reversed(refs)) + [refs[0]], "metal plate")  # order and duplicates do not count
    assert fresh.cache_info().reference_banks[:2] == (1, 0)  # read, not built
    test = _images(start=30)
    np.testing.assert_array_equal(fresh.rough_maps_for_images(test, "metal plate")[0],
                                  engine.rough_maps_for_images(test, "metal plate")[0])
    # another CLIP (seed) or other settings do not reuse it
    other = tiny_engine(seed=1)
    other.set_normal_references(refs, "metal plate")
    assert other.cache_info().reference_banks.misses == 1
    cfg = engine.config
    path = bank_cache_path(tmp_path, engine.identity, cfg, ["a", "b"])
    assert path != bank_cache_path(tmp_path, engine.identity, cfg.replace(fewshot_augment=False), ["a", "b"])
    assert path != bank_cache_path(tmp_path, other.identity, cfg, ["a", "b"])
    assert path == bank_cache_path(tmp_path, engine.identity, cfg.replace(fewshot_weight=0.9), ["b", "a"])
    # a damaged cache file is ignored (with a warning) and rebuilt
    from napari_clipsam.weights.registry import cache_dir

    files = list((cache_dir() / "references").glob("*.npz"))
    assert len(files) == 2 and not list((cache_dir() / "references").glob(".*"))  # no temporary files left
    for f in files:
        f.write_bytes(b"not a bank")
    again = tiny_engine()
    with caplog.at_level(logging.WARNING):
        again.set_normal_references(refs, "metal plate")
    assert again.cache_info().reference_banks.misses == 1 and "unreadable reference bank" in caplog.text


def test_bad_references_and_settings_are_refused_clearly(engine):
    with pytest.raises(ValueError, match="one or more defect-free images"):
        engine.set_normal_references([])
    with pytest.raises(ValueError, match="list of one or more"):
        engine.set_normal_references(np.zeros((2, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="Normal reference 1"):
        engine.set_normal_references([_images()[0], np.zeros((3, 3, 7))])
    with pytest.raises(ValueError, match="fewshot_weight = 1.5: expected a number from 0 to 1"):
        tiny_engine(fewshot_weight=1.5)  # refused when the config is built
    with pytest.raises(ValueError, match="fewshot_neighbourhood must be an odd"):
        tiny_engine(fewshot_neighbourhood=2).set_normal_references(_images())
    assert engine.normal_references() is None


def test_a_cancel_while_references_are_encoded_is_seen_inside_clips_encoder():
    from napari_clipsam.errors import Cancelled

    eng = tiny_engine()
    blocks = list(eng.clip_model.visual.transformer.resblocks)
    ran, asked = [], []
    first = blocks[0].register_forward_hook(lambda *a: asked.append(True))  # the person presses Cancel here
    last = blocks[-1].register_forward_hook(lambda *a: ran.append(True))
    try:
        with pytest.raises(Cancelled):
            eng.set_normal_references(_images(), "metal plate", cancelled=lambda: bool(asked), cache=False)
    finally:
        first.remove()
        last.remove()
    assert asked and not ran  # stopped after the block it was asked in, not at the end of the encoder
    assert eng.normal_references("metal plate") is None  # and nothing half-made was kept


# ------------------------------------------------------------------------------------------------ quality
IMAGE_PX, SHOTS = 128, 4


def _category_data(category: str, seed: int = 0):
    """The synthetic dataset's protocol in memory: K normal training images as references; 5 normal and 3 per
    defect type test images (``make_synthetic_dataset`` defaults, 128 px)."""
    refs = [synthetic_image(category, None, IMAGE_PX, _image_seed(seed, category, "train", "good", i))[0]
            for i in range(SHOTS)]
    test = [synthetic_image(category, None, IMAGE_PX, _image_seed(seed, category, "test", "good", i)) + ("good",)
            for i in range(5)]
    for d in CATEGORY_DEFECTS[category]:
        test += [synthetic_image(category, d, IMAGE_PX, _image_seed(seed, category, "test", d, i)) + (d,)
                 for i in range(3)]
    return refs, test


def measure_few_shot_auroc(clip_seeds=(0, 1)) -> dict[str, dict[str, list[float]]]:
    """Pixel AUROC of the few-shot map (fewshot_weight 1, every other setting at its default) per category and
    CLIP seed, with the tiny random CLIP at 224 px; also without the pcb's missing chip (see docs/method.md)."""
    out: dict[str, dict[str, list[float]]] = {"all": {}, "visible": {}}
    data = {c: _category_data(c) for c in CATEGORIES}
    for seed in clip_seeds:
        clip, tok = make_tiny_clip(seed, image_size=224)
        cfg = ClipSAMConfig(image_size=224, feature_layers=(1, 2, 3, 4), device="cpu", fewshot_weight=1.0)
        engine = ClipSAM.from_models(clip, tok, make_tiny_sam(seed), None, cfg)
        for c in CATEGORIES:
            refs, test = data[c]
            engine.set_normal_references(refs, c)
            maps = np.stack(engine.rough_maps_for_images([t[0] for t in test], c))
            masks = np.stack([t[1] for t in test])
            out["all"].setdefault(c, []).append(pixel_auroc(maps, masks))
            seen = np.array([t[2] != "missing_part" or c != "pcb" for t in test])
            out["visible"].setdefault(c, []).append(pixel_auroc(maps[seen], masks[seen]))
    return out


@pytest.fixture(scope="module")
def few_shot_auroc():
    return measure_few_shot_auroc()


def test_few_shot_map_reaches_095_mean_pixel_auroc(few_shot_auroc):
    per = {c: float(np.mean(v)) for c, v in few_shot_auroc["all"].items()}
    print("few-shot K=4 pixel AUROC", {c: round(v, 3) for c, v in per.items()})
    assert np.mean(list(per.values())) >= 0.95, per
    # every category whose defects can be seen locally is above 0.85
    visible = {c: float(np.mean(v)) for c, v in few_shot_auroc["visible"].items()}
    assert min(visible.values()) >= 0.85, visible


@pytest.mark.xfail(strict=True, reason="pcb's missing chip leaves exactly the board drawn under it, which looks like "
                   "normal board everywhere else: no local map can find it (measured pcb 0.80 with it, 0.98 "
                   "without; data seed 1: 0.76)")
def test_few_shot_map_has_no_category_below_085(few_shot_auroc):
    per = {c: float(np.mean(v)) for c, v in few_shot_auroc["all"].items()}
    assert min(per.values()) >= 0.85, per
