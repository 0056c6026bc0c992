"""Inference backends for the two encoders: the SAM image encoder and the CLIP vision tower.

``ClipSAMConfig.backend`` chooses who runs them (the prompt encoder, UMCI and text encoder stay in torch; with
OpenVINO and ``sam_decoder_backend="openvino"``, SAM's mask decoder runs there too, in float32:
:mod:`.openvino_decoder`)::

    "torch"     torch modules, with ``config.dtype`` autocast (float32 or bfloat16)
    "openvino"  OpenVINO on the CPU (``pip install "napari-clipsam[openvino]"``), each encoder converted once
                and cached on disk (openvino_encoders, ir_cache); no usage telemetry (openvino_runtime)
    "auto"      OpenVINO when the engine runs on the CPU and OpenVINO is installed; torch otherwise and on CUDA

With OpenVINO, ``config.sam_precision`` and ``config.clip_precision`` set each encoder's inference precision
(``"float32"``, ``"bfloat16"``, or ``"auto"``: bfloat16 where the CPU computes it natively, AMX or AVX-512 BF16,
detected at run time by :func:`~.cpu_features.detect_cpu`); ``sam_precision`` may also be ``"int8"``: the SAM
encoder quantised once with NNCF (opt-in, ``pip install "napari-clipsam[int8]"``, see :mod:`.int8_sam`). What was chosen, and why, is in every result's
provenance (``encoders``) and in the stamp of every SAM embedding, so results of different backends never mix.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .cpu_features import CpuFeatures, detect_cpu
from .openvino_runtime import openvino_available

INSTALL_HINT = 'pip install "napari-clipsam[openvino]"'


@dataclass(frozen=True)
class BackendPlan:
    """What runs the encoders. name: ``"torch"`` or ``"openvino"``; sam_precision / clip_precision: resolved
    ``"float32"`` or ``"bfloat16"`` (with torch: ``config.dtype``); reason: why, in words."""

    name: str
    sam_precision: str
    clip_precision: str
    reason: str
    cpu: CpuFeatures
    openvino: str | None = None
    sam_attention_bands: int = 1
    """OpenVINO: the converted SAM encoder's global attention in this many bands (config ``sam_attention_bands``)."""

    @property
    def stamp(self) -> str:
        """The backend part of a SAM embedding's stamp, e.g. ``"torch"``, ``"openvino-bfloat16"`` or, with the
        global attention in bands, ``"openvino-float32-bands8"`` (another graph: embeddings never mix)."""
        if self.name == "torch":
            return "torch"
        bands = f"-bands{self.sam_attention_bands}" if self.sam_attention_bands > 1 else ""
        return f"openvino-{self.sam_precision}{bands}"

    def describe(self) -> dict[str, Any]:
        """JSON-friendly record for provenance."""
        return {"backend": self.name, "sam_precision": self.sam_precision, "clip_precision": self.clip_precision,
                "reason": self.reason, "openvino": self.openvino, "cpu": self.cpu.model,
                "cpu_bf16_native": self.cpu.bf16_native, "cpu_bf16_source": self.cpu.bf16_source,
                **({"sam_attention_bands": self.sam_attention_bands} if self.name == "openvino" else {})}


def resolve_precision(setting: str, cpu: CpuFeatures) -> str:
    """``"auto"`` → ``"bfloat16"`` where the CPU has native bf16, else ``"float32"``; others unchanged (SAM's
    rule; CLIP's ``auto`` also needs a measurement within bounds: :func:`resolve_clip_precision`)."""
    if setting == "auto":
        return "bfloat16" if cpu.bf16_native else "float32"
    return setting


def resolve_clip_precision(config, cpu: CpuFeatures) -> tuple[str, str]:
    """``(precision, why)`` of the CLIP vision tower: ``config.clip_precision`` as it is, or for ``"auto"`` the
    rule of :mod:`.clip_bf16` (native bf16 and this architecture measured within the documented bounds)."""
    if config.clip_precision != "auto":
        return config.clip_precision, f"CLIP {config.clip_precision}: clip_precision={config.clip_precision!r}"
    from .clip_bf16 import auto_clip_precision

    return auto_clip_precision(config.clip_model, cpu)


def plan_backend(config, device) -> BackendPlan:
    """The :class:`BackendPlan` for ``config`` on the torch ``device`` the engine runs on.

    Raises ConfigError for ``backend="openvino"`` without OpenVINO installed or with a CUDA device.
    """
    from ...errors import ConfigError

    cpu = detect_cpu()
    on_cpu = getattr(device, "type", str(device)) == "cpu"
    if config.backend == "torch" or (config.backend == "auto" and not on_cpu):
        why = "backend='torch'" if config.backend == "torch" else f"auto: the engine runs on {device}"
        return BackendPlan("torch", config.dtype, config.dtype, why, cpu)
    if not on_cpu:
        raise ConfigError(f"ClipSAMConfig.backend = 'openvino' runs the encoders on the CPU, but the engine runs on "
                          f"{device}; use backend 'auto' or 'torch' with a GPU, or device 'cpu'.")
    if not openvino_available():
        if config.backend == "openvino":
            raise ConfigError(f"ClipSAMConfig.backend = 'openvino' needs OpenVINO, which is not installed: "
                              f"{INSTALL_HINT} (or choose backend 'auto' or 'torch').")
        return BackendPlan("torch", config.dtype, config.dtype, f"auto: OpenVINO is not installed ({INSTALL_HINT})",
                           cpu)
    from .openvino_runtime import openvino_version

    why = "backend='openvino'" if config.backend == "openvino" else "auto: CPU with OpenVINO installed"
    clip_precision, clip_why = resolve_clip_precision(config, cpu)
    return BackendPlan("openvino", resolve_precision(config.sam_precision, cpu), clip_precision,
                       f"{why}; {clip_why}", cpu, openvino_version(), int(config.sam_attention_bands))


@dataclass
class EncoderBackend:
    """A plan and the OpenVINO encoders installed on an engine (none with torch)."""

    plan: BackendPlan
    encoders: list = field(default_factory=list)
    torch_copies: list = field(default_factory=list)
    """``(encoder, module, key)``: the torch module each OpenVINO encoder was converted from, and its key."""

    def prepare(self, progress=None, sam: bool = True, release: bool = False) -> None:
        """Convert (once) or load the OpenVINO encoders now (SAM's only with ``sam``), reporting a conversion
        through ``progress``; an encoder not prepared here is prepared on its first use. ``release``: each
        encoder's torch copy is memory-mapped (see :meth:`release_torch_copies`) as soon as that encoder is
        compiled, so the process never holds every torch copy beside every compiled encoder (the peak of a
        cold load)."""
        for enc in self.encoders[:1] + (self.encoders[1:] if sam else []):
            enc.prepare(progress)
            if release:
                self.release_torch_copies(only=enc)

    def release_torch_copies(self, only=None) -> list:
        """Memory-map (:func:`.torch_spill.spill`) the torch module of every OpenVINO encoder prepared so far
        (or of the encoder ``only``): the modules keep working bit for bit (what still runs in torch reads them
        from the file) but no longer hold memory beside the compiled encoders. Returns the files.
        :meth:`ClipSAM.from_config` has them released for the models it loaded; an engine over a caller's
        modules (``from_models``) leaves them as they are."""
        from .ir_cache import IRCache
        from .torch_spill import spill

        root, files = IRCache().root, []
        for enc, module, key in self.torch_copies:
            if enc.prepared and (only is None or enc is only):
                path = spill(module, root, key)
                if path is not None:
                    files.append(path)
        return files


def attach_backend(engine) -> EncoderBackend:
    """Install the encoders ``engine.config`` asks for on ``engine.sam`` and ``engine.vision``.

    With OpenVINO the CLIP tower serves one converted graph, :func:`clip_graph`, that answers everything the
    engine asks CLIP for, so :meth:`EncoderBackend.prepare` converts exactly what the engine will run.
    """
    plan = plan_backend(engine.config, engine.device)
    if plan.name == "torch":
        return EncoderBackend(plan)
    from .openvino_decoder import OpenVinoSamDecoder
    from .openvino_encoders import OpenVinoClipTower, OpenVinoSamEncoder

    ident = engine.identity
    sam_key = {"model": ident.get("sam_model"), "weights": _weights_key(ident.get("sam_weights"), engine.sam.model),
               "architecture": _arch_key(ident.get("sam_architecture"), engine.sam.model)}
    clip_key = {"model": ident.get("clip_model"),
                "weights": _weights_key(ident.get("clip_weights"), engine.clip_model),
                "architecture": _arch_key(ident.get("clip_architecture"), engine.clip_model)}
    engine.sam.encoder = OpenVinoSamEncoder(engine.sam.model.image_encoder, sam_key, plan.sam_precision,
                                            prepare_input=lambda rgb, runner=engine.sam: runner.prepare(rgb)[0],
                                            attention_bands=plan.sam_attention_bands)
    if engine.config.sam_decoder_backend == "openvino":  # opt-in (issue 23; config docs)
        engine.sam.decoder = OpenVinoSamDecoder(engine.sam.model, sam_key)
    tower = OpenVinoClipTower(engine.vision.visual, engine.vision.image_size, clip_key, plan.clip_precision)
    engine.vision.tower = tower
    clip_enc = tower.serve(*clip_graph(engine))
    copies = [(clip_enc, engine.vision.visual, {"module": "clip_visual", **clip_key}),
              (engine.sam.encoder, engine.sam.model.image_encoder, {"module": "sam_image_encoder", **sam_key})]
    served = [clip_enc, engine.sam.encoder] + ([engine.sam.decoder] if engine.sam.decoder is not None else [])
    return EncoderBackend(plan, served, copies)


def clip_graph(engine) -> tuple[tuple[int, ...], str, bool]:
    """The one CLIP graph an OpenVINO engine converts, ``(0-based blocks, format, extra tokens)``: UMCI mode
    reads the feature layers' patch tokens; training-free mode reads the training-free block (with its CLS
    token) for zero-shot maps and, with normal references or folder scoring, the feature layers too
    (:meth:`~napari_clipsam.clip.vision.ClipVision.training_free_and_patch_tokens`), so its graph has both.

    One graph rather than one per kind of request (issue 23): the references' tokens, a few-shot segment's and a
    zero-shot segment's each made their own conversion (about 20 s each for ViT-L/14@336 on 2 cores) and
    compiled copy of the weights (1.2 GiB in fp32), so setting references and the first few-shot segment each
    stalled. The price: a zero-shot segment runs the blocks up to the last feature layer, one block more than
    it needs at the default layers (block 24 of 24 against 23: by block count about 4 % of a CLIP pass).
    """
    layers = {int(i) - 1 for i in engine.config.feature_layers}
    if engine.umci is not None:
        return tuple(sorted(layers)), "NCHW", False
    return tuple(sorted(layers | {engine.vision.depth - 2})), "NLC", True


def _weights_key(weights_id, module) -> str:
    """A weights identity fit for a cache key: a file hash or tag as it is; random or unnamed weights by content."""
    text = str(weights_id)
    if text in ("random", "None", "") or text.startswith("fingerprint:"):
        from ...clip.text_encoder import weights_fingerprint

        return "fingerprint:" + weights_fingerprint(module)
    return text


def _arch_key(arch, module) -> str:
    """The architecture part of a converted model's key (:func:`~napari_clipsam.io.cache_files.architecture_fingerprint`):
    the same weights in another module tree (QuickGELU vs GELU) are another graph."""
    if arch:
        return str(arch)
    from ...io.cache_files import architecture_fingerprint

    return architecture_fingerprint(module)
