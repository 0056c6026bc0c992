"""Memory-mapped torch copies of the OpenVINO encoders (engine/backends/torch_spill.py): after
``release_torch_copies`` the engine gives the same results, and the torch paths that still read the modules (the
training-free head, a torch engine over the same modules) give exactly what they gave before."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_clipsam.engine.backends.openvino_runtime import openvino_available

if not openvino_available():  # never a plain `import openvino`: that loads OpenVINO's telemetry
    pytest.skip("OpenVINO is an optional extra: pip install -e '.[openvino]'", allow_module_level=True)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _same_result(a, b):
    assert np.array_equal(a.rough_map, b.rough_map) and np.array_equal(a.mask, b.mask)
    assert np.array_equal(a.final_map, b.final_map)


def _tiny_pair():
    from napari_clipsam.testing import tiny_engine

    ov = tiny_engine(seed=0, backend="openvino", sam_precision="float32", clip_precision="float32")
    torch_engine = tiny_engine(seed=0)
    from napari_clipsam.engine.clipsam import ClipSAM

    # a torch engine over the OpenVINO engine's own modules: it reads exactly the tensors that get memory-mapped
    shared = ClipSAM.from_models(ov.clip_model, ov.text.tokenizer, ov.sam.model, None, torch_engine.config)
    return ov, shared


def test_release_keeps_every_result(rgb):
    from napari_clipsam.engine.backends.torch_spill import is_spilled

    ov, shared = _tiny_pair()
    ov.backend.prepare()
    x = ov.vision.preprocess([rgb])
    before = (ov.segment(rgb, "part"), shared.segment(rgb, "part"),
              ov.sam.model.image_encoder(torch.zeros(1, 3, 256, 256)),
              ov.vision.visual.forward_intermediates(x, indices=[3], intermediates_only=True)["image_intermediates"])
    params = {n: p.detach().clone() for n, p in ov.sam.model.image_encoder.named_parameters()}
    files = ov.backend.release_torch_copies()
    assert len(files) == 2 and all(f.is_file() and f.stat().st_size > 0 for f in files)
    assert is_spilled(ov.vision.visual) and is_spilled(ov.sam.model.image_encoder)
    assert not is_spilled(ov.clip_model.transformer)  # the text tower stays in memory: it runs in torch
    for n, p in ov.sam.model.image_encoder.named_parameters():
        assert torch.equal(p, params[n])  # bit for bit
    ov.clear_caches()
    shared.clear_caches()
    _same_result(ov.segment(rgb, "part"), before[0])
    _same_result(shared.segment(rgb, "part"), before[1])  # the torch path over the mapped modules
    assert torch.equal(ov.sam.model.image_encoder(torch.zeros(1, 3, 256, 256)), before[2])
    after = ov.vision.visual.forward_intermediates(x, indices=[3], intermediates_only=True)["image_intermediates"]
    assert all(torch.equal(a, b) for a, b in zip(after, before[3]))
    assert ov.backend.release_torch_copies() == files  # a second call changes nothing


def test_damaged_spill_file_is_written_again(tmp_path):
    from napari_clipsam.engine.backends.torch_spill import spill, spill_path

    torch.manual_seed(0)
    a, b = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)
    b.load_state_dict(a.state_dict())
    key = {"model": "lin", "weights": "w1"}
    path = spill(a, tmp_path, key)
    assert path == spill_path(tmp_path, {**key, "torch": torch.__version__.split("+")[0]})
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))  # damaged on disk: the hash no longer matches
    assert spill(b, tmp_path, key) == path
    x = torch.randn(3, 8)
    assert torch.equal(a(x), b(x)) and torch.equal(b.weight, a.weight)


@pytest.mark.slow  # two more OpenVINO engines (~5 s)
def test_unspilled_engines_are_left_alone():
    """An encoder not prepared yet keeps its torch module (nothing to map it for)."""
    from napari_clipsam.engine.backends.torch_spill import is_spilled

    ov, _ = _tiny_pair()
    ov.backend.prepare(sam=False)
    files = ov.backend.release_torch_copies()
    assert len(files) == 1 and is_spilled(ov.vision.visual) and not is_spilled(ov.sam.model.image_encoder)


def test_each_torch_copy_is_released_as_soon_as_its_encoder_is_compiled(rgb):
    """``prepare(release=True)`` (what ``from_config`` does) maps CLIP's torch copy before SAM's encoder is even
    prepared, so a cold load never holds both torch copies beside both compiled encoders; results unchanged."""
    from napari_clipsam.engine.backends.torch_spill import is_spilled

    ov, _ = _tiny_pair()
    want = ov.segment(rgb, "part")
    ov.clear_caches()
    compiled_sam = []
    sam_encoder = ov.backend.encoders[1]
    original = sam_encoder.prepare

    def prepare_sam(progress=None):  # records what is mapped when SAM's turn comes (a spy, not a stand-in)
        compiled_sam.append((is_spilled(ov.vision.visual), is_spilled(ov.sam.model.image_encoder)))
        original(progress)

    sam_encoder.prepare = prepare_sam
    ov.backend.prepare(release=True)
    assert compiled_sam == [(True, False)]
    assert is_spilled(ov.vision.visual) and is_spilled(ov.sam.model.image_encoder)
    _same_result(ov.segment(rgb, "part"), want)
