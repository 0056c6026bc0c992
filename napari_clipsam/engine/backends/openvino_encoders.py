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
                from .convert_child import model_of
                from .int8_sam import COMPILE_HINT, QUANTIZE_FACTOR

                fields.update(self.quantized_key())
                convert, what, hint = (lambda: self.quantizer(model_of(self._convert()))), f"{what} (int8)", COMPILE_HINT
                expected *= QUANTIZE_FACTOR
            threads = torch.get_num_threads()
            share = (str(cache.entry(fields)), self.precision, threads)
            with _shared_lock:
                shared = _shared.get(share)
            if shared is None:
                model = cache.get_or_convert(fields, convert, what, progress, expected)
                shared = _Compiled(compile_for_cpu(model, hint, threads, self.key["input"]))
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
        from .convert_child import convert_in_child

        report = stage_report()  # inside a stage: raises Cancelled on a cancel request, which stops the child
        model = convert_in_child(self.module, self.input_size, None if report is None else lambda: report(0.0),
                                 keep_files=True)  # the cache stores the child's files as written
        if model is not None:
            return model
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
                 prepare_input: Callable[[Any], torch.Tensor] | None = None, attention_bands: int = 1):
        """``prepare_input(rgb)``: the engine's SAM input of a uint8 RGB image (``SamRunner.prepare``'s first
        output), needed for ``precision="int8"``, whose calibration images go through it. ``attention_bands``
        > 1: the converted graph computes the global attention in that many bands of query rows (see
        :mod:`.lean_sam`; the config's ``sam_attention_bands``)."""
        from .lean_sam import BandedSamImageEncoder

        quantizer = quantized_key = None
        if precision == "int8":
            from . import int8_sam

            int8_sam.import_nncf()  # fail now, with the install hint, not at the first segment
            quantizer, quantized_key = (lambda m: int8_sam.quantize(m, prepare_input)), int8_sam.int8_key_fields
        bands = int(attention_bands)
        module = BandedSamImageEncoder(image_encoder, bands) if bands > 1 else image_encoder
        self.encoder = OpenVinoEncoder(module, image_encoder.img_size, {"encoder": "sam_image_encoder",
                                       "attention_bands": bands, **model_key}, "SAM image encoder", precision,
                                       cache, quantizer, quantized_key)

    @property
    def prepared(self) -> bool:
        return self.encoder.prepared

    def prepare(self, progress: Progress | None = None) -> None:
        self.encoder.prepare(progress)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)[0]


Request = tuple[tuple[int, ...], str, bool]
"""What the CLIP tower is asked for: ``(0-based block indices, "NCHW" or "NLC", extra tokens)``."""


def covers(graph: Request, request: Request) -> bool:
    """Whether a converted ``graph`` answers ``request`` exactly: its blocks include the request's, it has the
    extra (CLS) tokens when asked, and its layout is the request's or NLC (NLC patch tokens reshape to NCHW the
    way ``forward_intermediates`` itself does)."""
    (g_idx, g_fmt, g_extra), (idx, fmt, extra) = graph, request
    return set(idx) <= set(g_idx) and (g_extra or not extra) and g_fmt in (fmt, "NLC")


class OpenVinoClipTower:
    """CLIP's vision tower through OpenVINO, in ``forward_intermediates``' terms (see :class:`ClipIntermediates`).

    Each converted graph costs a conversion (tens of seconds for ViT-L, once) and, compiled, its own copy of the
    weights (1.2 GiB for ViT-L fp32), so the engine names one graph that serves everything it asks for
    (:meth:`serve`: in training-free mode the feature layers and the training-free block together): zero-shot
    segments, normal references (their patch tokens) and few-shot segments all run it, taking the outputs they
    need. A request no served graph covers gets a graph of its own on first use (issue 23: references made one,
    the first few-shot segment another, 20 s each at the cpu preset).
    """

    def __init__(self, visual, image_size: int, model_key: dict[str, Any], precision: str,
                 cache: IRCache | None = None):
        self.visual, self.image_size, self.model_key, self.precision, self.cache = (visual, image_size, model_key,
                                                                                      precision, cache)
        patch = visual.patch_size
        self.grid = self.image_size // int(patch[0] if isinstance(patch, (tuple, list)) else patch)
        self._encoders: dict[Request, OpenVinoEncoder] = {}
        self._served: list[Request] = []
        self._lock = threading.Lock()

    def _request(self, indices, fmt: str, extra: bool) -> Request:
        """A request in the terms of its outputs: ``forward_intermediates`` returns each block once, in block
        order (a negative index counts from the end), whatever order the indices were given in."""
        depth = len(self.visual.transformer.resblocks)
        return tuple(sorted({int(i) + depth if int(i) < 0 else int(i) for i in indices})), str(fmt), bool(extra)

    def serve(self, indices, fmt: str, extra: bool) -> OpenVinoEncoder:
        """Make the graph of ``(indices, fmt, extra)`` answer every request it :func:`covers`; returns its
        encoder (prepared on its first use or by :meth:`OpenVinoEncoder.prepare`)."""
        req = self._request(indices, fmt, extra)
        with self._lock:
            if req not in self._served:
                self._served.append(req)
        return self._encoder(req)

    def graph_for(self, indices, fmt: str, extra: bool) -> Request:
        """The graph that runs for this request: the first served graph covering it, else its own."""
        req = self._request(indices, fmt, extra)
        with self._lock:
            return next((g for g in self._served if covers(g, req)), req)

    def encoder_for(self, indices, fmt: str, extra: bool) -> OpenVinoEncoder:
        """The encoder that runs for this request (see :meth:`graph_for`)."""
        return self._encoder(self.graph_for(indices, fmt, extra))

    def _encoder(self, req: Request) -> OpenVinoEncoder:
        with self._lock:
            if req not in self._encoders:
                key = {"encoder": "clip_vision", "indices": list(req[0]), "fmt": req[1], "extra": req[2],
                       **self.model_key}
                self._encoders[req] = OpenVinoEncoder(ClipIntermediates(self.visual, *req), self.image_size, key,
                                                      "CLIP vision tower", self.precision, self.cache)
            return self._encoders[req]

    @property
    def compiled_graphs(self) -> tuple[Request, ...]:
        """The graphs prepared so far (converted or loaded, and compiled), in the order they were made: how tests
        and the bench see that a step made no new one."""
        with self._lock:
            return tuple(r for r, e in self._encoders.items() if e.prepared)

    def __call__(self, x: torch.Tensor, indices, fmt: str, extra: bool) -> dict[str, list[torch.Tensor]]:
        """Like ``visual.forward_intermediates(x, indices, stop_early=True, intermediates_only=True,
        output_fmt=fmt, output_extra_tokens=extra)``: ``{"image_intermediates": [...]}`` and, with ``extra``,
        ``"image_intermediates_prefix"``."""
        req = self._request(indices, fmt, extra)
        graph = self.graph_for(*req)
        outs = self._encoder(graph)(x)
        n = len(graph[0])
        pos = [graph[0].index(i) for i in req[0]]  # both in block order (see _request)
        tokens = [outs[j] for j in pos]
        if graph[1] == "NLC" and req[1] == "NCHW":  # as forward_intermediates reshapes
            tokens = [t.reshape(t.shape[0], self.grid, self.grid, -1).permute(0, 3, 1, 2).contiguous()
                      for t in tokens]
        result = {"image_intermediates": tokens}
        if req[2]:
            result["image_intermediates_prefix"] = [outs[n + j] for j in pos]
        return result
