"""Loading real weights through the product's code paths, with tiny local files (no network)."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_clipsam import ClipSAM, ClipSAMConfig, IncompatibleCheckpointError, WeightsUnavailableError
from napari_clipsam.testing import make_tiny_sam, tiny_config
from napari_clipsam.weights.registry import cache_dir


def test_from_config_loads_local_tiny_models(tmp_path, rgb):
    cfg = tiny_config(tmp_path)
    engine = ClipSAM.from_config(cfg)
    r = engine.segment(rgb, "bottle")
    assert r.final_map.shape == rgb.shape[:2]
    assert r.provenance["clip_weights"].startswith("sha256:")
    assert r.provenance["sam_weights"].startswith("sha256:")
    assert r.provenance["mode"] == "training-free"
    # same files, same weights: identical results through a second load
    again = ClipSAM.from_config(cfg).segment(rgb, "bottle")
    np.testing.assert_array_equal(r.final_map, again.final_map)


def test_from_config_with_umci_checkpoint_and_incompatible_clip(tmp_path, rgb):
    from napari_clipsam.clip.umci import UMCI
    from napari_clipsam.weights.umci_checkpoint import save_umci

    cfg = tiny_config(tmp_path)
    engine = ClipSAM.from_config(cfg)
    umci = UMCI(64, 32, (1, 2, 3, 4), heads=4)
    path = save_umci(tmp_path / "umci.pt", umci, clip_model=engine.identity["clip_model"],
                     clip_weights=engine.identity["clip_weights"], image_size=56,
                     prompt_set_hash=cfg.prompt_set_hash())
    with_umci = ClipSAM.from_config(cfg.replace(umci_weights=str(path)))
    r = with_umci.segment(rgb, "bottle")
    assert r.provenance["mode"] == "umci" and r.provenance["umci_weights"].startswith("sha256:")
    assert "umci_usage_mismatch" not in r.provenance
    with pytest.warns(UserWarning, match="trained at 56 px and the engine runs CLIP at 84 px"):
        bigger = ClipSAM.from_config(cfg.replace(umci_weights=str(path), image_size=84))
    assert "trained at 56 px" in bigger.provenance("bottle")["umci_usage_mismatch"][0]
    for a, b in zip(with_umci.umci.state_dict().values(), umci.state_dict().values()):
        torch.testing.assert_close(a, b)
    other = tiny_config(tmp_path / "other", seed=5)
    with pytest.raises(IncompatibleCheckpointError, match="trained on CLIP"):
        ClipSAM.from_config(other.replace(umci_weights=str(path)))
    # the same CLIP folder moved elsewhere is the same CLIP: the checkpoint still fits
    moved = tmp_path / "moved_clip"
    shutil.move(cfg.clip_model.split(":", 1)[1], moved)
    again = ClipSAM.from_config(cfg.replace(clip_model=f"local-dir:{moved}", umci_weights=str(path)))
    assert again.identity["clip_model"] == engine.identity["clip_model"] and again.mode == "umci"


def test_missing_and_wrong_architecture_files(tmp_path):
    cfg = tiny_config(tmp_path)
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        ClipSAM.from_config(ClipSAMConfig.preset("cpu", clip_weights="random", sam_weights=str(tmp_path / "no.pth"),
                                                 device="cpu"))
    torch.save(make_tiny_sam().state_dict(), tmp_path / "tiny.pth")  # a tiny SAM is not a vit_b
    from napari_clipsam.weights.loaders import load_sam

    with pytest.raises(WeightsUnavailableError, match="could not be loaded as vit_b"):
        load_sam(cfg.replace(sam_model="vit_b", sam_weights=str(tmp_path / "tiny.pth")))
    with pytest.raises(WeightsUnavailableError, match="no weights tagged"):
        ClipSAM.from_config(cfg.replace(clip_model="ViT-B-32", clip_weights="nonexistent-tag"))


def test_cache_dir_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_CLIPSAM_CACHE", str(tmp_path / "x"))
    assert cache_dir() == Path(tmp_path / "x")


def test_unusable_umci_files_say_what_is_wrong(tmp_path):
    from napari_clipsam.weights.umci_checkpoint import read_umci

    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(WeightsUnavailableError, match="could not be read as a PyTorch checkpoint"):
        read_umci(junk)
    with pytest.raises(WeightsUnavailableError, match="is a folder; give the checkpoint file"):
        read_umci(tmp_path)
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        read_umci(tmp_path / "missing.pt")


def test_random_weights_are_the_same_every_run_and_leave_torch_rng_alone():
    """``"random"`` weights (the bench's) come from a fixed seed: a second run finds the models it converted."""
    from types import SimpleNamespace

    import torch

    from napari_clipsam.weights.loaders import load_clip, load_sam

    state = torch.get_rng_state()
    cfg = SimpleNamespace(sam_model="vit_b", sam_weights="random", clip_model="ViT-B-32", clip_weights="random",
                          image_size=224)
    (sam_a, id_a), (sam_b, _) = load_sam(cfg), load_sam(cfg)
    clip_a, clip_b = load_clip(cfg)[0], load_clip(cfg)[0]
    assert id_a == "random" and torch.equal(torch.get_rng_state(), state)
    for a, b in ((sam_a, sam_b), (clip_a, clip_b)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sam_a.image_encoder.patch_embed.proj.weight, torch.zeros_like(
        sam_a.image_encoder.patch_embed.proj.weight))  # random, not blank


def test_sam_checkpoint_loads_without_random_init_into_the_same_model(tmp_path):
    """load_sam builds the image encoder empty and assigns the checkpoint's tensors: the same model, tensor for
    tensor, as building it at random and copying the checkpoint in; an fp16 checkpoint becomes float32."""
    from napari_clipsam.testing import write_tiny_sam
    from napari_clipsam.weights.loaders import load_sam
    from napari_clipsam.weights.sam_arch import build_sam, load_checkpoint
    from napari_clipsam.weights.tiny import TINY_SAM_CFG

    folder = write_tiny_sam(tmp_path / "sam", seed=3)
    state = torch.load(folder / "sam.pth", weights_only=True)
    plain = build_sam(TINY_SAM_CFG)
    plain.load_state_dict(state, strict=True)
    sam, weights_id = load_sam(ClipSAMConfig(sam_model=f"local-dir:{folder}"))
    assert weights_id.startswith("sha256:") and not sam.training
    got, want = sam.state_dict(), plain.state_dict()
    assert got.keys() == want.keys()
    for k in want:
        assert not got[k].is_meta and got[k].dtype == want[k].dtype
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)
    x = torch.rand(1, 3, 256, 256)
    torch.testing.assert_close(sam.image_encoder(x), plain.image_encoder(x), rtol=0, atol=0)
    half = load_checkpoint(TINY_SAM_CFG, {k: v.half() if v.is_floating_point() else v for k, v in state.items()})
    assert {t.dtype for t in half.state_dict().values() if t.is_floating_point()} == {torch.float32}
    with pytest.raises(RuntimeError, match="Missing key"):
        load_checkpoint(TINY_SAM_CFG, {k: v for k, v in state.items() if not k.startswith("image_encoder.neck")})


def _tensors(model) -> dict:
    out = dict(model.named_buffers())
    out.update(model.state_dict())
    return out


def _assert_same_clip(model, reference) -> None:
    got, want = _tensors(model), _tensors(reference)
    assert got.keys() == want.keys()
    assert not [k for k in got if got[k].is_meta or not torch.equal(got[k], want[k])]
    image = torch.linspace(-1, 1, 3 * 56 * 56).view(1, 3, 56, 56)
    text = torch.arange(1, 78).view(1, 77)
    model.eval(), reference.eval()
    with torch.no_grad():  # both on the same attention kernels (a module needing gradients takes another path)
        torch.testing.assert_close(model.encode_image(image), reference.encode_image(image), rtol=0, atol=0)
        torch.testing.assert_close(model.encode_text(text), reference.encode_text(text), rtol=0, atol=0)


@pytest.mark.parametrize("custom_text", [False, True], ids=["CLIP", "CustomTextCLIP (built the usual way)"])
def test_clip_built_without_random_init_equals_open_clips_own_load(tmp_path, custom_text, caplog):
    """load_clip makes a checkpoint's CLIP on the meta device and loads every tensor into it (no random
    initialisation first): the same parameters, buffers (the causal mask, which no checkpoint holds) and outputs
    as open_clip's create_model; an architecture with other unsaved buffers (CustomTextCLIP's mask sits in its
    text tower) is built the ordinary way, with the same result."""
    import json

    import open_clip

    from napari_clipsam.weights.loaders import load_clip
    from napari_clipsam.weights.tiny import TINY_CLIP_CFG, seeded

    folder = tmp_path / "mine"  # tiny_config writes its own models into tmp_path / "clip"
    folder.mkdir()
    cfg = {**TINY_CLIP_CFG, "custom_text": True} if custom_text else TINY_CLIP_CFG
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    with seeded(5):
        made = (open_clip.CustomTextCLIP if custom_text else open_clip.CLIP)(**TINY_CLIP_CFG)
    torch.save(made.state_dict(), folder / "open_clip_pytorch_model.bin")
    config = tiny_config(tmp_path).replace(clip_model=f"local-dir:{folder}")
    with caplog.at_level("DEBUG", logger="napari_clipsam.weights.loaders"):
        model, *_ = load_clip(config)
    said = "with random initialisation: buffers no checkpoint holds: ['text.attn_mask']" if custom_text else \
        "without random initialisation"
    assert said in caplog.text
    reference = open_clip.create_model(f"local-dir:{folder}", force_image_size=56)
    _assert_same_clip(model, reference)
    _assert_same_clip(model, made)
    assert model.visual.preprocess_cfg == reference.visual.preprocess_cfg
    # a damaged file, and another architecture's weights, are refused with what was wrong
    (folder / "open_clip_pytorch_model.bin").write_bytes(b"cut short")
    with pytest.raises(WeightsUnavailableError, match="Could not load CLIP local-dir:.*mine"):
        load_clip(config)
    torch.save(make_tiny_sam().state_dict(), folder / "open_clip_pytorch_model.bin")
    with pytest.raises(WeightsUnavailableError, match="Missing key|Unexpected key"):
        load_clip(config)
    import pickle

    (folder / "open_clip_pytorch_model.bin").write_bytes(pickle.dumps({"run": print}))  # not tensors and data
    with pytest.raises(WeightsUnavailableError, match="no checkpoint it can load safely") as info:
        load_clip(config)
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)  # not torch's page of advice


@pytest.mark.slow  # a 250 MB checkpoint of a built-in architecture (ViT-S-32)
def test_a_builtin_architectures_checkpoint_file_loads_without_random_init(tmp_path):
    import open_clip

    from napari_clipsam.weights.loaders import load_clip
    from napari_clipsam.weights.tiny import seeded

    with seeded(1):
        made = open_clip.create_model("ViT-S-32", force_image_size=56)
    torch.save(made.state_dict(), tmp_path / "vit_s_32.pt")
    model, *_ = load_clip(ClipSAMConfig(clip_model="ViT-S-32", clip_weights=str(tmp_path / "vit_s_32.pt"),
                                        image_size=56, device="cpu"))
    _assert_same_clip(model, open_clip.create_model("ViT-S-32", pretrained=str(tmp_path / "vit_s_32.pt"),
                                                    force_image_size=56))
