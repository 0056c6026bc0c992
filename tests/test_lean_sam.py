"""The banded SAM image encoder (engine/backends/lean_sam.py) equals segment_anything's own encoder."""
import importlib.util

import pytest
import torch

from napari_clipsam.engine.backends.lean_sam import BandedSamImageEncoder, _band_edges
from napari_clipsam.testing import make_tiny_sam


def _with_rel_pos(sam, seed=0):
    """SAM initialises its relative position tables to zero; give them values so the banded bias is exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for blk in sam.image_encoder.blocks:
            if blk.attn.use_rel_pos:
                blk.attn.rel_pos_h.copy_(torch.randn(blk.attn.rel_pos_h.shape, generator=gen))
                blk.attn.rel_pos_w.copy_(torch.randn(blk.attn.rel_pos_w.shape, generator=gen))
    return sam


@pytest.mark.parametrize("bands", [1, 3, 8, 16, 40])
def test_banded_encoder_equals_the_library_encoder(bands):
    sam = _with_rel_pos(make_tiny_sam(0))
    enc = sam.image_encoder.eval()
    assert any(blk.window_size == 0 for blk in enc.blocks) and enc.blocks[0].attn.use_rel_pos
    x = torch.randn(2, 3, enc.img_size, enc.img_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = enc(x), BandedSamImageEncoder(enc, bands).eval()(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_banded_encoder_shares_the_parameters():
    enc = make_tiny_sam(0).image_encoder
    banded = BandedSamImageEncoder(enc, 8)
    assert {id(p) for p in banded.parameters()} == {id(p) for p in enc.parameters()}


@pytest.mark.parametrize("rows,bands", [(64, 8), (16, 3), (5, 8), (7, 1)])
def test_bands_cover_every_row_once(rows, bands):
    edges = _band_edges(rows, bands)
    covered = [r for a, b in edges for r in range(a, b)]
    assert covered == list(range(rows)) and len(edges) == min(bands, rows)


def test_openvino_sam_encoder_runs_the_banded_graph_compiled_for_one_shape(tmp_path):
    """What the engine compiles: the banded graph (its cache key says so), for the one input shape it is run on
    (a static shape lets OpenVINO plan its working memory ahead), equal to the library's torch encoder."""
    if importlib.util.find_spec("openvino") is None:  # looked up, not imported: napari-clipsam imports it
        pytest.skip("OpenVINO is not installed")                        # with its converter's telemetry off
    from napari_clipsam.config import ClipSAMConfig
    from napari_clipsam.engine.backends.ir_cache import IRCache
    from napari_clipsam.engine.backends.openvino_encoders import OpenVinoSamEncoder

    enc = _with_rel_pos(make_tiny_sam(0)).image_encoder.eval()
    bands = ClipSAMConfig().sam_attention_bands
    assert bands > 1
    ov_enc = OpenVinoSamEncoder(enc, {"model": "tiny", "weights": "seed-0"}, "float32", IRCache(tmp_path),
                                attention_bands=bands)
    assert ov_enc.encoder.key["attention_bands"] == bands
    assert isinstance(ov_enc.encoder.module, BandedSamImageEncoder)
    x = torch.randn(1, 3, enc.img_size, enc.img_size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = enc(x)
    got = ov_enc(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    shape = ov_enc.encoder._compiled.compiled.inputs[0].get_partial_shape()
    assert shape.is_static and [d.get_length() for d in shape] == [1, 3, enc.img_size, enc.img_size]
