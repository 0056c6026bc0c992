"""CLIP side: truncated text encoding, text prompts, UMCI shapes and gradients, vision features."""
import numpy as np
import pytest
import torch

from napari_clipsam import ClipSAMConfig
from napari_clipsam.clip.text_encoder import encode_text
from napari_clipsam.clip.text_prompts import (ABNORMAL_STATES, NORMAL_STATES, TEMPLATES, clean_object_name,
                                              expand_prompts)
from napari_clipsam.clip.umci import UMCI
from napari_clipsam.testing import make_tiny_clip


def test_prompt_lists_match_the_method():
    assert len(NORMAL_STATES) == 7 and len(ABNORMAL_STATES) == 5 and len(TEMPLATES) == 35
    assert "a photo of the {} for visual inspection." in TEMPLATES
    p = expand_prompts("Metal_nut", ("damaged {}",), ("a cropped photo of the {}.",))
    assert p == ["a cropped photo of the damaged metal nut."]
    with pytest.raises(ValueError, match="empty"):
        clean_object_name(" _ ")


def test_truncated_text_encoding_equals_full_context():
    model, tok = make_tiny_clip(seed=2)
    prompts = expand_prompts("bottle", NORMAL_STATES, TEMPLATES[:6]) + ["a"]
    tokens = tok(prompts)
    fast = encode_text(model, tokens, truncate=True)
    full = encode_text(model, tokens, truncate=False)
    assert fast.shape == (len(prompts), 32)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=0)
    # and it really is the model's own encode_text
    ref = torch.nn.functional.normalize(model.encode_text(tokens), dim=-1)
    torch.testing.assert_close(full, ref, atol=1e-6, rtol=0)


def test_class_embeddings_are_normalised_rows(engine):
    T = engine.text_embeddings("capsule")
    assert T.shape == (2, 32)
    torch.testing.assert_close(T.norm(dim=-1), torch.ones(2), atol=1e-5, rtol=0)
    assert not torch.allclose(T[0], T[1])


def test_umci_shapes_and_gradients():
    umci = UMCI(in_dim=64, dim=32, layers=(1, 2, 3, 4), heads=4, kernels=(2, 4))
    tokens = [torch.randn(2, 64, 5, 7, requires_grad=False) for _ in range(4)]  # odd, non-square grid
    T = torch.nn.functional.normalize(torch.randn(2, 32), dim=-1)
    logits = umci(tokens, T)
    assert len(logits) == 4 and all(lg.shape == (2, 2, 5, 7) for lg in logits)
    loss = sum(lg.logsumexp(dim=1).mean() - lg[:, 1].mean() for lg in logits)
    loss.backward()
    grads = {n: p.grad for n, p in umci.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert all(g.abs().sum() > 0 for n, g in grads.items() if n.endswith("weight"))
    assert umci.num_parameters() == sum(p.numel() for p in umci.parameters()) > 0


def test_umci_layers_must_exist_in_clip():
    from napari_clipsam.engine.clipsam import ClipSAM
    from napari_clipsam.testing import make_tiny_sam

    clip, tok = make_tiny_clip()
    with pytest.raises(ValueError, match="1 to 4"):
        ClipSAM.from_models(clip, tok, make_tiny_sam(), UMCI(64, 32, (2, 9), heads=4))


def test_vision_features_shapes(engine, umci_engine, rgb):
    tf = engine.clip_features([rgb, rgb])
    assert tf.shape == (2, 4, 4, 32)  # 56 px / 14 = 4×4 grid, joint width 32
    layers = umci_engine.clip_features([rgb])
    assert len(layers) == 4 and all(t.shape == (1, 64, 4, 4) for t in layers)
    x = engine.vision.preprocess(rgb)
    assert x.shape == (1, 3, 56, 56) and x.dtype == torch.float32


def test_real_vit_l14_336_architecture_uses_quickgelu():
    from open_clip.transformer import QuickGELU

    from napari_clipsam.weights.loaders import load_clip

    cfg = ClipSAMConfig.preset("cpu", clip_weights="random")
    with torch.device("meta"):
        model, _, name, weights = load_clip(cfg, device="meta")
    assert name == "ViT-L-14-336-quickgelu" and weights == "random"
    acts = {type(b.mlp.gelu) for b in model.visual.transformer.resblocks}
    acts |= {type(b.mlp.gelu) for b in model.transformer.resblocks}
    assert acts == {QuickGELU}
    assert model.visual.positional_embedding.shape == (24 * 24 + 1, 1024)
    assert model.text_projection.shape == (768, 768)
    with torch.device("meta"):
        big, *_ = load_clip(ClipSAMConfig.preset("accurate", clip_weights="random"), device="meta")
    assert big.visual.positional_embedding.shape == (37 * 37 + 1, 1024)
