"""The SAM image encoder and the CLIP vision tower, converted to OpenVINO and run on the CPU.

Each encoder is converted once from the torch module the engine already holds (``openvino.convert_model`` of the
module traced on a ``(1, 3, S, S)`` example; weights are never read twice from disk), cached by
:class:`~.ir_cache.IRCache`, and compiled for one image at a time (on the CPU, batches measured slower than
single images, so a batch of ``B`` images runs as ``B`` calls). Inputs and outputs are torch tensors, so the
engine's code around the encoders is the same for every backend.

A compiled model cannot report per transformer block, so each inference runs as an asynchronous infer request
polled every :data:`POLL_MS`: inside :meth:`~napari_clipsam.engine.progress.Stepper.per_block` the stage's progress moves
by time (:func:`timed_fraction`) and a cancel request cancels the request, which OpenVINO's CPU plugin stops
before its next operation (:meth:`_Compiled.infer`).
"""
from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import torch

from ..progress import stage_report
from .conversion_progress import estimate_seconds
from .ir_cache import FORMAT, IR_PRECISION, IRCache, Progress


class ClipIntermediates(torch.nn.Module):
    """The part of an open_clip ``VisionTransformer`` up to the last requested block, as one traceable module.

    ``forward(x)``: ``(1, 3, S, S)`` → the outputs of ``visual.forward_intermediates(x, indices, stop_early=True,
    intermediates_only=True, output_fmt=fmt, output_extra_tokens=extra)`` as a flat tuple: one tensor per index
    (``(1, C, h, w)`` for NCHW, ``(1, h·w, C)`` for NLC), then, with ``extra``, one ``(1, P, C)`` prefix (CLS)
    tensor per index.
    """

    def __init__(self, visual, indices: tuple[int, ...], fmt: str, extra: bool):
        super().__init__()
        self.visual, self.indices, self.fmt, self.extra = visual, list(indices), fmt, extra

    def forward(self, x):
        out = self.visual.forward_intermediates(x, indices=self.indices, stop_early=True, intermediates_only=True,
                                                output_fmt=self.fmt, output_extra_tokens=self.extra)
        return tuple(out["image_intermediates"]) + tuple(out.get("image_intermediates_prefix", ()) if self.extra
                                                         else ())


POLL_MS = 50
"""How often (milliseconds) a running inference reports progress and looks for a cancel request."""
FIRST_GUESS_S = 1.0
"""Time scale of the progress of a compiled model's first inference, before one has been timed."""
CAP = 0.95
"""Time-based progress stays below this until the inference has ended."""


def timed_fraction(elapsed: float, expected: float | None) -> float:
    """How far an inference that has run ``elapsed`` seconds has got, as progress below :data:`CAP`:
    ``elapsed / expected`` with ``expected`` the last finished inference of the same compiled model (capped),
    ``elapsed / (elapsed + FIRST_GUESS_S)`` before there is one (it moves, and never arrives)."""
    ratio = min(1.0, elapsed / expected) if expected else elapsed / (elapsed + FIRST_GUESS_S)
    return CAP * ratio


class _Compiled:
    """One compiled model, shared (see ``_shared``).

    Every inference has its own infer request, run asynchronously and polled every :data:`POLL_MS`, so two
    threads (the widget prefetches while the user works) each wait on their own request and can each cancel
    theirs: OpenVINO runs the requests of one stream one after another on the model's one set of working
    memory, and a request itself holds only its input and output tensors. ``seconds``: how long the last
    finished inference took (the time scale of progress); ``stopped``: inferences cancelled before their end.
    """

    def __init__(self, compiled):
        self.compiled, self.seconds, self.stopped = compiled, None, 0

    def infer(self, x, report: Callable[[float], None] | None = None) -> list[torch.Tensor]:
        """The outputs for one ``(1, 3, S, S)`` float32 array. While it runs, ``report(fraction)`` (0..1, by
        time) is called right away and then every :data:`POLL_MS`; whatever it raises (a cancel:
        :class:`~napari_clipsam.errors.Cancelled`) cancels the inference, which stops within one of its
        operations, and is raised again once it has stopped."""
        request = self.compiled.create_infer_request()
        start = time.perf_counter()
        request.start_async({0: x})
        try:
            while True:
                if report is not None:
                    report(timed_fraction(time.perf_counter() - start, self.seconds))
                if request.wait_for(POLL_MS):
                    break
        except BaseException:
            request.cancel()
            try:
                request.wait()
            except RuntimeError:  # OpenVINO's "infer request was cancelled": stopped before its end
                self.stopped += 1
            raise
        self.seconds = time.perf_counter() - start
        outputs = range(len(self.compiled.outputs))
        return [torch.from_numpy(request.get_output_tensor(j).data.copy()) for j in outputs]


_shared: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_shared_lock = threading.Lock()
"""Compiled models by (cache entry, precision, threads), shared by every encoder of the process that needs the
same one (engines over the same models, the benchmark's variants): a compiled SAM keeps gigabytes of working
memory, so it exists once. An entry goes when the last encoder using it goes."""


class OpenVinoEncoder:
    """A torch module run through OpenVINO: ``encoder(x)`` with ``x`` ``(B, 3, S, S)`` float32 → the module's
    outputs as a tuple of float32 torch tensors, batch ``B`` (images run one at a time).

    Conversion (or loading from the cache) and compilation happen on the first call or on :meth:`prepare`.
    """

    def __init__(self, module: torch.nn.Module, input_size: int, key: dict[str, Any], what: str, precision: str,
                 cache: IRCache | None = None, quantizer: Callable[[Any], Any] | None = None,
                 quantized_key: Callable[[], dict[str, Any]] | None = None):
        """``quantizer`` (with ``precision="int8"``): float32 ``openvino.Model`` → quantised one, run once after
        conversion; ``quantized_key()`` gives the fields it adds to the cache key (see :mod:`.int8_sam`)."""
        self.module, self.input_size, self.what, self.precision = module, int(input_size), what, precision
        self.key = {**key, "format": FORMAT, "input": [1, 3, self.input_size, self.input_size],
                    "ir_precision": IR_PRECISION}
        self.cache, self.quantizer, self.quantized_key = cache, quantizer, quantized_key
        self._compiled = None
        self._lock = threading.Lock()

    @property
    def prepared(self) -> bool:
        """Whether the compiled model is ready (converted or loaded, and compiled)."""
        return self._compiled is not None

    def prepare(self, progress: Progress | None = None) -> None:
        """Convert (once, cached on disk) and compile; ``progress`` hears a conversion (see IRCache)."""
        from .openvino_runtime import compile_for_cpu, openvino_version

        with self._lock:
            if self._compiled is not None:
                return
            cache = self.cache or IRCache()
            fields = {**self.key, "openvino": openvino_version(), "torch": torch.__version__.split("+")[0]}
            convert, what, hint, expected = (self._convert, self.what, self.precision,
                                             estimate_seconds(self.module, self.input_size))
            if self.precision == "int8":
                from .int8_sam import COMPILE_HINT, QUANTIZE_FACTOR

                fields.update(self.quantized_key())
                convert, what, hint = (lambda: self.quantizer(self._convert())), f"{what} (int8)", COMPILE_HINT
                expected *= QUANTIZE_FACTOR
            threads = torch.get_num_threads()
            share = (str(cache.entry(fields)), self.precision, threads)
            with _shared_lock:
                shared = _shared.get(share)
            if shared is None:
                model = cache.get_or_convert(fields, convert, what, progress, expected)
                shared = _Compiled(compile_for_cpu(model, hint, threads))
                with _shared_lock:
                    shared = _shared.setdefault(share, shared)
            self._compiled = shared

    def _convert(self):
        from ...errors import ClipSAMUserError
        from .openvino_runtime import converter_telemetry_off, import_openvino

        ov = import_openvino()
        if not converter_telemetry_off():
            raise ClipSAMUserError(
                "OpenVINO's converter was imported by other code in this program with its usage telemetry on, so "
                "napari-clipsam does not convert with it. Run `opt_in_out --opt_out` once, or use backend='torch'.")
        example = torch.zeros(1, 3, self.input_size, self.input_size)
        with torch.no_grad():
            return ov.convert_model(self.module.eval(), example_input=example)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Inside :meth:`~napari_clipsam.engine.progress.Stepper.per_block`, the stage's progress moves by time while each
        image runs and a cancel request stops the inference mid-way (see :meth:`_Compiled.infer`)."""
        self.prepare()
        x = x.detach().float().cpu().contiguous()
        report, n, per_image = stage_report(), x.shape[0], []
        for i in range(n):
            part = None if report is None else lambda f, i=i: report((i + f) / n)
            per_image.append(self._compiled.infer(x[i:i + 1].numpy(), part))
            if report is not None:
                report((i + 1) / n)
        return tuple(torch.cat([p[j] for p in per_image]) for j in range(len(per_image[0])))


class OpenVinoSamEncoder:
    """SAM's image encoder through OpenVINO: ``(B, 3, 1024, 1024)`` → ``(B, 256, 64, 64)`` (as SamRunner needs)."""

    def __init__(self, image_encoder, model_key: dict[str, Any], precision: str, cache: IRCache | None = None,
                 prepare_input: Callable[[Any], torch.Tensor] | None = None):
        """``prepare_input(rgb)``: the engine's SAM input of a uint8 RGB image (``SamRunner.prepare``'s first
        output), needed for ``precision="int8"``, whose calibration images go through it."""
        quantizer = quantized_key = None
        if precision == "int8":
            from . import int8_sam

            int8_sam.import_nncf()  # fail now, with the install hint, not at the first segment
            quantizer, quantized_key = (lambda m: int8_sam.quantize(m, prepare_input)), int8_sam.int8_key_fields
        self.encoder = OpenVinoEncoder(image_encoder, image_encoder.img_size, {"encoder": "sam_image_encoder",
                                       **model_key}, "SAM image encoder", precision, cache, quantizer,
                                       quantized_key)

    @property
    def prepared(self) -> bool:
        return self.encoder.prepared

    def prepare(self, progress: Progress | None = None) -> None:
        self.encoder.prepare(progress)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)[0]


class OpenVinoClipTower:
    """CLIP's vision tower through OpenVINO, in ``forward_intermediates``' terms (see :class:`ClipIntermediates`).

    One converted model per request (indices, format, extra tokens): the engine makes one kind of request (its
    feature layers, or the training-free block), so one conversion.
    """

    def __init__(self, visual, image_size: int, model_key: dict[str, Any], precision: str,
                 cache: IRCache | None = None):
        self.visual, self.image_size, self.model_key, self.precision, self.cache = (visual, image_size, model_key,
                                                                                      precision, cache)
        self._encoders: dict[tuple, OpenVinoEncoder] = {}
        self._lock = threading.Lock()

    def encoder_for(self, indices: tuple[int, ...], fmt: str, extra: bool) -> OpenVinoEncoder:
        req = (tuple(int(i) for i in indices), fmt, bool(extra))
        with self._lock:
            if req not in self._encoders:
                key = {"encoder": "clip_vision", "indices": list(req[0]), "fmt": fmt, "extra": req[2],
                       **self.model_key}
                self._encoders[req] = OpenVinoEncoder(ClipIntermediates(self.visual, *req), self.image_size, key,
                                                      "CLIP vision tower", self.precision, self.cache)
            return self._encoders[req]

    def __call__(self, x: torch.Tensor, indices, fmt: str, extra: bool) -> dict[str, list[torch.Tensor]]:
        """Like ``visual.forward_intermediates(x, indices, stop_early=True, intermediates_only=True,
        output_fmt=fmt, output_extra_tokens=extra)``: ``{"image_intermediates": [...]}`` and, with ``extra``,
        ``"image_intermediates_prefix"``."""
        outs = self.encoder_for(indices, fmt, extra)(x)
        n = len(tuple(indices))
        result = {"image_intermediates": list(outs[:n])}
        if extra:
            result["image_intermediates_prefix"] = list(outs[n:])
        return result

