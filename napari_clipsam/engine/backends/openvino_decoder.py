"""SAM's mask decoder through OpenVINO on the CPU: the part of a refine that decodes prompts (issue 23, refine
≤ 100 ms for one edited component).

A correction re-decodes the prompts of the component it touched; on a CPU that is SAM's mask decoder, about
80 % of the refine in torch. :class:`MaskDecoderGraph` is what :meth:`~napari_clipsam.mmr.sam_decoder.SamRunner.
decode_logits` runs after the prompt encoder (which stays in torch: its per-label indexing is under a
millisecond), as one traceable module with the dense inputs folded in (no mask input, the dense positional
encoding). :class:`OpenVinoSamDecoder` converts it once with the prompt count and the number of prompt tokens
left dynamic, caches it beside the encoders (:class:`~.ir_cache.IRCache`, keyed by the SAM's weights) and runs it
in float32 (OpenVINO's CPU plugin computes the same operations in another order: logits within about 1e-6 of
torch's, see ``tests/test_refine_fast.py``).
"""
from __future__ import annotations

import logging
import threading
from typing import Any

import torch

from .conversion_progress import estimate_seconds
from .ir_cache import FORMAT, IR_PRECISION, IRCache, Progress

log = logging.getLogger(__name__)
EXAMPLE_TOKENS = 7
"""Prompt tokens of the traced example (the graph takes any number)."""


class MaskDecoderGraph(torch.nn.Module):
    """``forward(features, sparse)``: SAM's image embedding ``(1, C, h, w)`` and sparse prompt embeddings
    ``(B, N, C)`` → low-resolution mask logits ``(B, 3, 4h, 4w)`` and predicted IoUs ``(B, 3)``: the mask decoder
    with multimask output, the dense embedding being the prompt encoder's no-mask one (no mask input), as
    ``SamRunner.decode_logits`` calls it."""

    def __init__(self, sam_model):
        super().__init__()
        self.prompt_encoder = sam_model.prompt_encoder
        self.mask_decoder = sam_model.mask_decoder

    def forward(self, features: torch.Tensor, sparse: torch.Tensor):
        pe = self.prompt_encoder
        h, w = pe.image_embedding_size
        dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(sparse.shape[0], -1, h, w)
        return self.mask_decoder(image_embeddings=features, image_pe=pe.get_dense_pe(),
                                 sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                 multimask_output=True)


class OpenVinoSamDecoder:
    """SAM's prompt decoder through OpenVINO: ``decoder(features, sparse)`` → ``(logits, ious)`` as torch float32
    tensors (see :class:`MaskDecoderGraph`), any number of prompts and prompt tokens per call.

    Converted (in a child process, see :mod:`.convert_child`) or loaded from the cache on :meth:`prepare` or the
    first call; every call has its own infer request, so threads may decode at once.

    The graph compiled with dynamic shapes serves any call; :meth:`compile_static` compiles a copy for one
    ``(prompts, tokens)`` shape alone (measured about 20 % less CPU time a call on SAM vit_b), which the later
    calls of that shape use. Nothing compiles one by itself (see :meth:`_for`).
    """

    def __init__(self, sam_model, model_key: dict[str, Any], cache: IRCache | None = None):
        self.graph = MaskDecoderGraph(sam_model)
        dim = int(sam_model.prompt_encoder.embed_dim)
        h, w = (int(s) for s in sam_model.prompt_encoder.image_embedding_size)
        self.inputs = [([1, dim, h, w], [1, dim, h, w]), ([1, EXAMPLE_TOKENS, dim], [-1, -1, dim])]
        self.key = {"module": "sam_mask_decoder", **model_key, "format": FORMAT, "inputs": self.inputs,
                    "ir_precision": IR_PRECISION}
        self.cache = cache
        self.side = int(sam_model.image_encoder.img_size)
        self._compiled = None
        self._model = None
        self._static: dict[tuple[int, int], Any] = {}
        self.seen: set[tuple[int, int]] = set()
        """Every ``(prompts, tokens)`` shape called so far."""
        self._lock = threading.Lock()

    @property
    def prepared(self) -> bool:
        return self._compiled is not None

    def prepare(self, progress: Progress | None = None) -> None:
        """Convert (once, cached on disk) and compile in float32; ``progress`` hears a conversion."""
        from .openvino_runtime import compile_for_cpu, openvino_version

        with self._lock:
            if self._compiled is not None:
                return
            fields = {**self.key, "openvino": openvino_version(), "torch": torch.__version__.split("+")[0]}
            model = (self.cache or IRCache()).get_or_convert(fields, self._convert, "SAM mask decoder", progress,
                                                             estimate_seconds(self.graph, self.side))
            self._compiled = compile_for_cpu(model, "float32", torch.get_num_threads())
            self._model = model

    @property
    def static_shapes(self) -> tuple[tuple[int, int], ...]:
        """The shapes that have a copy of their own compiled so far."""
        with self._lock:
            return tuple(self._static)

    def compile_static(self, shape: tuple[int, int]) -> None:
        """Compile the copy for ``shape`` (prompts, tokens) now, unless there is one (see the class text)."""
        from .openvino_runtime import compile_for_cpu, import_openvino

        self.prepare()
        if shape in self._static:
            return
        model = self._model.clone()
        dims = self.inputs[0][1]
        model.reshape({model.inputs[0]: import_openvino().PartialShape(dims),
                       model.inputs[1]: import_openvino().PartialShape([shape[0], shape[1], dims[1]])})
        compiled = compile_for_cpu(model, "float32", torch.get_num_threads())
        with self._lock:
            self._static.setdefault(shape, compiled)

    def _for(self, shape: tuple[int, int]):
        """The compiled model a call of ``shape`` runs on: its own copy when :meth:`compile_static` made one,
        else the dynamic graph. Copies are not compiled in the background: a compile still running in a thread
        when the interpreter exits aborts the process (measured: the CLI ended with SIGABRT)."""
        with self._lock:
            self.seen.add(shape)
            compiled = self._static.get(shape)
        return compiled if compiled is not None else self._compiled

    def _convert(self):
        from ...errors import ClipSAMUserError
        from ..progress import stage_report
        from .convert_child import convert_in_child, convert_module
        from .openvino_runtime import converter_telemetry_off, import_openvino

        ov = import_openvino()
        if not converter_telemetry_off():
            raise ClipSAMUserError(
                "OpenVINO's converter was imported by other code in this program with its usage telemetry on, so "
                "napari-clipsam does not convert with it. Run `opt_in_out --opt_out` once, or use backend='torch'.")
        report = stage_report()  # inside a stage: a cancel request stops the child
        model = convert_in_child(self.graph, None, None if report is None else lambda: report(0.0),
                                 inputs=self.inputs, keep_files=True)
        if model is not None:
            return model
        from .convert_child import input_spec

        return convert_module(ov, self.graph, input_spec(inputs=self.inputs))

    def __call__(self, features: torch.Tensor, sparse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.prepare()
        request = self._for((int(sparse.shape[0]), int(sparse.shape[1]))).create_infer_request()
        request.infer({0: features.detach().float().cpu().contiguous().numpy(),
                       1: sparse.detach().float().cpu().contiguous().numpy()})
        low_res, iou = (torch.from_numpy(request.get_output_tensor(j).data.copy()) for j in range(2))
        return low_res, iou
