"""UMCI training and evaluation (method §2, §4) on tiny random-initialised CLIP models and synthetic data."""
from __future__ import annotations

import math
import time

import pytest
import torch

from napari_clipsam import IncompatibleCheckpointError
from napari_clipsam.data import make_synthetic_dataset, open_dataset
from napari_clipsam.metrics import METRIC_NAMES
from napari_clipsam.testing import tiny_engine
from napari_clipsam.training.evaluation import evaluate_dataset, format_table, result_rows, spread_subset
from napari_clipsam.training.losses import anomaly_map_loss, dice_loss, focal_loss, umci_loss
from napari_clipsam.training.trainer import TrainSettings, object_name, train_umci
from napari_clipsam.weights.umci_checkpoint import read_umci, save_umci


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------------ losses
def _logits(*pairs):
    """(1, 2, 1, N) logits from (normal, anomalous) pairs, one pixel each."""
    return torch.tensor(pairs, dtype=torch.float32).T.reshape(1, 2, 1, len(pairs))


def test_focal_loss_matches_hand_computation():
    # pixel 1: softmax (1/4, 3/4), label 1 -> p_t = 3/4; pixel 2: softmax (4/5, 1/5), label 1 -> p_t = 1/5
    z = _logits((0.0, math.log(3.0)), (math.log(4.0), 0.0))
    t = torch.ones(1, 1, 2)
    expected = (-(0.25 ** 2) * math.log(0.75) - (0.8 ** 2) * math.log(0.2)) / 2
    assert float(focal_loss(z, t)) == pytest.approx(expected, rel=1e-5)
    # gamma = 0 is plain cross-entropy
    assert float(focal_loss(z, t, gamma=0.0)) == pytest.approx(-(math.log(0.75) + math.log(0.2)) / 2, rel=1e-5)
    # label 0 on the first pixel: p_t = 1/4
    t0 = torch.tensor([[[0.0, 1.0]]])
    expected0 = (-(0.75 ** 2) * math.log(0.25) - (0.8 ** 2) * math.log(0.2)) / 2
    assert float(focal_loss(z, t0)) == pytest.approx(expected0, rel=1e-5)
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        focal_loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2))


def test_dice_loss_matches_hand_computation():
    prob = torch.tensor([[[0.9, 0.2], [0.1, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    target = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    # image 1: 1 - (2·0.9 + 1) / (1.2 + 1 + 1) = 0.125; image 2 (empty, predicted empty): 1 - 1/1 = 0
    assert float(dice_loss(prob, target)) == pytest.approx(0.0625, rel=1e-6)
    assert float(dice_loss(prob[:1], target[:1])) == pytest.approx(0.125, rel=1e-6)
    # a confident miss costs almost 1
    assert float(dice_loss(torch.zeros(1, 8, 8), torch.ones(1, 8, 8))) == pytest.approx(1 - 1 / 65, rel=1e-6)


def test_anomaly_map_loss_is_focal_plus_two_dice_terms():
    # two pixels, logits (0, ln 3) and (ln 4, 0); mask (1, 0)
    z = _logits((0.0, math.log(3.0)), (math.log(4.0), 0.0))
    t = torch.tensor([[[1.0, 0.0]]])
    focal = (-(0.25 ** 2) * math.log(0.75) - (0.2 ** 2) * math.log(0.8)) / 2
    p1, p0 = (0.75, 0.2), (0.25, 0.8)
    dice_anom = 1 - (2 * 0.75 + 1) / (sum(p1) + 1 + 1)
    dice_norm = 1 - (2 * 0.8 + 1) / (sum(p0) + 1 + 1)
    assert float(anomaly_map_loss(z, t)) == pytest.approx(focal + dice_anom + dice_norm, rel=1e-5)


def test_umci_loss_upsamples_each_layer_and_sums():
    # constant logits stay constant when upsampled, so each layer's loss is that of a constant map
    masks = torch.zeros(1, 4, 4)
    masks[0, :2, :2] = 1.0
    low = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    full = low[:, :, :1, :1].expand(1, 2, 4, 4)
    one = float(anomaly_map_loss(full, masks))
    assert float(umci_loss([low], masks)) == pytest.approx(one, rel=1e-5)
    assert float(umci_loss([low, low.clone()], masks)) == pytest.approx(2 * one, rel=1e-5)
    # the loss is lower for logits that agree with the mask than for the opposite ones
    good = torch.stack([1 - masks, masks], dim=1) * 4.0
    assert float(umci_loss([good], masks)) < float(umci_loss([good.flip(1)], masks))


# ------------------------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = make_synthetic_dataset(tmp_path_factory.mktemp("small"), ("metal", "fabric"), n_train_good=0,
                                  n_test_good=2, n_test_defect=1, image_size=64, seed=0)
    return open_dataset(root)


def _fast(**kw):
    return TrainSettings(**{"epochs": 2, "batch_size": 4, "progress": False, **kw})


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_training_is_deterministic_for_a_seed_and_leaves_the_callers_rng_alone(small_set):
    caller = torch.random.get_rng_state()
    engine = tiny_engine(0)
    assert torch.equal(torch.random.get_rng_state(), caller), "building a tiny engine reseeded the caller's RNG"
    a = train_umci(engine, small_set, _fast(seed=5), log=lambda m: None)
    assert torch.equal(torch.random.get_rng_state(), caller), "training reseeded the caller's RNG"
    with torch.random.fork_rng(devices=[]):
        torch.rand(7)  # the caller's RNG elsewhere: the seed alone decides the weights
        b = train_umci(tiny_engine(0), small_set, _fast(seed=5), log=lambda m: None)
    c = train_umci(tiny_engine(0), small_set, _fast(seed=6), log=lambda m: None)
    assert _same_weights(a.umci, b.umci) and a.epoch_losses == b.epoch_losses
    assert not _same_weights(a.umci, c.umci)
    assert len(a.epoch_losses) == 2 and all(math.isfinite(v) for v in a.epoch_losses)
    assert a.parameters == sum(p.numel() for p in a.umci.parameters())


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(small_set, tmp_path):
    full = train_umci(tiny_engine(0), small_set, _fast(epochs=3), out=tmp_path / "full.pt", log=lambda m: None)
    part = train_umci(tiny_engine(0), small_set, _fast(epochs=1), out=tmp_path / "part.pt", log=lambda m: None)
    assert read_umci(tmp_path / "part.pt")["training_state"]["epoch"] == 1
    logs = []
    # the resumed run is given other settings: the checkpoint's own are used, and the change is reported
    caller = torch.random.get_rng_state()
    resumed = train_umci(tiny_engine(0), small_set, _fast(epochs=3, lr=5e-2, batch_size=2), out=tmp_path / "part.pt",
                         resume=tmp_path / "part.pt", log=logs.append)
    assert torch.equal(torch.random.get_rng_state(), caller), "resuming set the caller's RNG to the checkpoint's"
    assert resumed.resumed_from_epoch == 1 and resumed.epochs == 3
    assert any("Resuming with the checkpoint's settings" in m for m in logs)
    assert _same_weights(full.umci, resumed.umci)
    assert resumed.epoch_losses == full.epoch_losses
    a, b = read_umci(tmp_path / "full.pt"), read_umci(tmp_path / "part.pt")
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert b["epochs"] == 3 and b["training_state"]["epoch"] == 3 and b["epoch_losses"] == a["epoch_losses"]
    assert b["training_data"]["counts"] == {"fabric": {"images": 6, "anomalous": 4},
                                            "metal": {"images": 6, "anomalous": 4}}
    # asking for no more epochs than done: nothing to do, the checkpoint's weights come back
    logs.clear()
    again = train_umci(tiny_engine(0), small_set, _fast(epochs=2), resume=tmp_path / "part.pt", log=logs.append)
    assert again.epochs == 3 and _same_weights(again.umci, full.umci) and "nothing to do" in logs[-1]


def test_resume_refuses_incompatible_checkpoints(small_set, tmp_path):
    path = tmp_path / "umci.pt"
    train_umci(tiny_engine(0), small_set, _fast(epochs=1), out=path, log=lambda m: None)
    with pytest.raises(IncompatibleCheckpointError, match="trained on CLIP weights"):
        train_umci(tiny_engine(1), small_set, _fast(), resume=path, log=lambda m: None)  # another CLIP
    with pytest.raises(ValueError, match="another prompt set"):
        train_umci(tiny_engine(0, templates=("a photo of a {}.",)), small_set, _fast(), resume=path,
                   log=lambda m: None)
    metal_only = open_dataset(small_set.root, categories="metal")
    with pytest.raises(ValueError, match=r"trained on other data \(fabric: 6 images, metal: 6 images\) than this run.s \(metal: 6 images\)"):
        train_umci(tiny_engine(0), metal_only, _fast(), resume=path, log=lambda m: None)
    engine = tiny_engine(0)
    bare = save_umci(tmp_path / "bare.pt", read_umci_module(path), clip_model=engine.identity["clip_model"],
                     clip_weights=engine.identity["clip_weights"], image_size=56,
                     prompt_set_hash=engine.config.prompt_set_hash())
    with pytest.raises(ValueError, match="holds no training state"):
        train_umci(engine, small_set, _fast(), resume=bare, log=lambda m: None)


def read_umci_module(path):
    from napari_clipsam.clip.umci import UMCI

    ckpt = read_umci(path)
    h = ckpt["hparams"]
    umci = UMCI(h["in_dim"], h["dim"], tuple(h["layers"]), h["heads"], tuple(h["kernels"]), h["temperature"])
    umci.load_state_dict(ckpt["state_dict"])
    return umci


def test_features_spill_to_a_temporary_file_when_over_budget(small_set, tmp_path):
    spill = tmp_path / "spill"
    spill.mkdir()
    report = train_umci(tiny_engine(0), small_set, _fast(cache_bytes=1, cache_dir=str(spill)), log=lambda m: None)
    assert len(report.epoch_losses) == 2 and all(math.isfinite(v) for v in report.epoch_losses)
    assert list(spill.iterdir()) == []  # the memory-mapped feature file is removed afterwards


def test_bad_settings_and_empty_data_are_refused(small_set):
    with pytest.raises(ValueError, match="batch size and epochs"):
        train_umci(tiny_engine(0), small_set, _fast(epochs=0), log=lambda m: None)
    with pytest.raises(ValueError, match="holds no images"):
        train_umci(tiny_engine(0), type(small_set)(small_set.root, []), _fast(), log=lambda m: None)


# ------------------------------------------------------------------------------------------------ evaluation
def test_evaluate_dataset_rough_and_final(small_set):
    engine = tiny_engine(0, umci=True)
    res = evaluate_dataset(engine, small_set, limit=4, progress=False)
    assert list(res["categories"]) == ["fabric", "metal"]
    for cat in res["categories"].values():
        assert cat["images"] == 4 and 1 <= cat["anomalous"] <= 3
        for m in ("rough", "final"):
            assert set(cat[m]) == set(METRIC_NAMES)
            assert all(math.isnan(v) or 0.0 <= v <= 1.0 for v in cat[m].values())
    assert res["settings"]["resolution"] == 56 and res["engine"]["mode"] == "umci"
    assert engine.config.rough_sigma == 0.0  # the evaluation's smoothing does not stick to the engine
    rough = evaluate_dataset(engine, small_set, limit=4, rough_only=True, progress=False)
    assert rough["mean"]["final"] is None
    # the rough map is the same with or without SAM
    assert rough["mean"]["rough"]["pixel_auroc"] == pytest.approx(res["mean"]["rough"]["pixel_auroc"])
    rows = result_rows(rough)
    assert [r["category"] for r in rows] == ["fabric", "metal", "mean"]
    assert rows[-1]["images"] == 8 and rows[0]["final_pixel_auroc"] == ""
    table = format_table(res)
    assert "pAUROC" in table and "PRO-pub" in table and table.count("final") == 3
    tiny = {"categories": {"metal": {"images": 2, "rough": dict.fromkeys(res["mean"]["rough"], -1e-6),
                                     "final": None}}, "mean": {"rough": dict.fromkeys(res["mean"]["rough"], 0.0),
                                                                "final": None}}
    assert "-0.0" not in format_table(tiny) and " 0.0" in format_table(tiny)  # a hair below zero prints as 0.0


def test_map_cache_reuses_maps_and_notices_retrained_weights(small_set, tmp_path):
    engine = tiny_engine(0, umci=True)
    first = evaluate_dataset(engine, small_set, rough_only=True, progress=False, map_cache=True)
    again = evaluate_dataset(engine, small_set, rough_only=True, progress=False, map_cache=True)
    assert first["settings"]["cached_images"] == 0 and again["settings"]["cached_images"] == len(small_set)
    assert again["categories"] == first["categories"]
    with_final = evaluate_dataset(engine, small_set, progress=False, map_cache=True)  # another setting: no reuse
    assert with_final["settings"]["cached_images"] == 0
    with torch.no_grad():  # the same engine with changed UMCI weights must not see the old maps
        next(engine.umci.parameters()).add_(0.5)
    changed = evaluate_dataset(engine, small_set, rough_only=True, progress=False, map_cache=True)
    assert changed["settings"]["cached_images"] == 0
    assert changed["categories"] != first["categories"]


def test_spread_subset():
    assert spread_subset(10, None) == list(range(10))
    assert spread_subset(10, 3) == [0, 4, 9]  # first, middle and last: normal and defect folders both kept
    assert spread_subset(3, 5) == [0, 1, 2]
    with pytest.raises(ValueError, match="at least 1"):
        spread_subset(10, 0)
    assert object_name("metal_nut") == "metal nut"


# ------------------------------------------------------------------------------------------------ learning
# Tiny random CLIP (4 blocks, width 64) at 56 px (4×4 patch grid), 64-px synthetic images. UMCI is trained on
# "metal" and "fabric" (the generator's first two categories) and evaluated on new images (another dataset
# seed) of those categories and on the held-out category "pcb" (the generator's default third one).
LEARN_TRAIN = ("metal", "fabric")
LEARN_HELD_OUT = "pcb"


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NAPARI_CLIPSAM_CACHE", str(tmp_path_factory.mktemp("learn-cache")))
        t0 = time.perf_counter()
        train_root = make_synthetic_dataset(tmp_path_factory.mktemp("learn-train"), LEARN_TRAIN, n_train_good=0,
                                            n_test_good=8, n_test_defect=5, image_size=64, seed=0)
        test_root = make_synthetic_dataset(tmp_path_factory.mktemp("learn-test"), (*LEARN_TRAIN, LEARN_HELD_OUT),
                                           n_train_good=0, n_test_good=6, n_test_defect=3, image_size=64, seed=1)
        train_set, test_set = open_dataset(train_root), open_dataset(test_root)
        engine = tiny_engine(0)
        free = evaluate_dataset(engine, test_set, rough_only=True, progress=False)
        t1 = time.perf_counter()
        report = train_umci(engine, train_set, TrainSettings(epochs=30, batch_size=8, lr=1e-3, seed=111,
                                                             progress=False), log=lambda m: None)
        t2 = time.perf_counter()
        engine.umci = report.umci.eval()
        trained = evaluate_dataset(engine, test_set, rough_only=True, progress=False)
        t3 = time.perf_counter()
    figures = {c: {"trained": trained["categories"][c]["rough"]["pixel_auroc"],
                   "training_free": free["categories"][c]["rough"]["pixel_auroc"]} for c in test_set.categories}
    times = {"data_and_training_free_eval": t1 - t0, "train": t2 - t1, "eval": t3 - t2, "total": t3 - t0}
    return {"figures": figures, "times": times, "train_images": len(train_set), "report": report}


def _print_figures(capsys, learned, title):
    with capsys.disabled():
        print(f"\n[{title}] rough-map pixel AUROC, trained UMCI vs training-free, tiny random CLIP "
              f"({learned['train_images']} training images, 30 epochs):")
        for c, f in learned["figures"].items():
            role = "held out" if c == LEARN_HELD_OUT else "new images of a training category"
            print(f"  {c:<7} ({role}): trained {f['trained']:.3f}  training-free {f['training_free']:.3f}")
        print("  times: " + ", ".join(f"{k} {v:.1f} s" for k, v in learned["times"].items()))


def test_trained_umci_learns_the_training_categories(learned, capsys):
    _print_figures(capsys, learned, "learning")
    losses = learned["report"].epoch_losses
    assert losses[-1] < 0.8 * losses[0]
    for c in LEARN_TRAIN:
        f = learned["figures"][c]
        assert f["trained"] > 0.9, f"{c}: trained pixel AUROC {f['trained']:.3f} on new images"
        assert f["trained"] > f["training_free"] + 0.2, f


@pytest.mark.xfail(strict=True, reason=(
    "Not reached with a tiny random-initialised CLIP: measured pixel AUROC on the held-out 'pcb' 0.53 trained "
    "vs 0.50 training-free (train metal+fabric, 30 epochs; CLIP seeds 1/2 gave 0.53/0.31; 112 px instead of 56 "
    "gave 0.50). A random CLIP carries colour, not the idea of a defect, so what UMCI learns on two categories "
    "(e.g. 'dark on grey, bright on blue') does not transfer: over all 30 (training pair, held-out) splits of "
    "the 5 synthetic categories (10 epochs) the held-out AUROC ranged 0.06-0.89, mean 0.48, one split above "
    "0.80. On new images of the training categories it reaches 0.93-0.96 (test above)."))
def test_trained_umci_generalises_to_a_held_out_category(learned, capsys):
    _print_figures(capsys, learned, "held-out category")
    f = learned["figures"][LEARN_HELD_OUT]
    assert f["trained"] > 0.80, f"held-out {LEARN_HELD_OUT}: trained pixel AUROC {f['trained']:.3f}"
    assert f["trained"] > f["training_free"] + 0.15, f
