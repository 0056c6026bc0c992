"""Every setting of the method (``shared/docs/clipsam-method.md``) as one documented dataclass.

Each ``[choice]`` of the method document is a field here with the document's default, so a user who
has the paper or better data can change it without touching code.

**One default.** ``ClipSAMConfig()`` *is* the default everywhere: the engine without a config
(``ClipSAM.from_config()``), the command line (``--preset`` defaults to :data:`DEFAULT_PRESET`, which changes
nothing) and the napari widget all start from it. It is the method document's setting except for two model sizes: CLIP
runs at 336 px (ViT-L/14@336's own 24×24 grid, no positional-embedding resize) and SAM is ``vit_b``. The paper's
518 px + SAM ``vit_h`` is the ``"accurate"`` preset. Why: the package is mostly run interactively on a laptop or
workstation CPU. There the cpu setting's cold ``segment`` already takes 13 s on the measured 2-core machine, 11 s
of it SAM vit_b's encoder (docs/performance.md); SAM vit_h's encoder has about 7× vit_b's parameters and compute
(632 M against 89 M; a 2.6 GB download against 375 MB) and 518 px gives CLIP 2.4× the tokens, so the paper's
setting would take over a minute per image (an estimate from those figures). On a GPU choose
``preset("accurate")``. Every other threshold is the document's.

Presets are the default with a few fields changed (:data:`PRESET_CHANGES`). Field roles are field metadata, not
lists kept by hand: ``per_call`` fields may change per call (:data:`PER_CALL_FIELDS`, ``engine.using``),
``recorded`` fields decide a result and are written into its provenance (:meth:`ClipSAMConfig.thresholds`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from .clip.text_prompts import ABNORMAL_STATES, NORMAL_STATES, TEMPLATES
from .config_checks import check_config
from .errors import ConfigError

DEFAULT_PRESET = "cpu"
"""The preset that is the field defaults (no changes): what the CLI and the widget start from."""
PRESET_CHANGES: dict[str, dict[str, Any]] = {
    DEFAULT_PRESET: {}, "accurate": {"image_size": 518, "sam_model": "vit_h"}}
"""Each preset as changes of the default config; ``accurate`` is the method document's (paper's) input size and SAM."""
PRESETS = tuple(PRESET_CHANGES)


def setting(default: Any, *, per_call: bool = False, recorded: bool = False):
    """A config field with its roles as metadata: ``per_call`` (a call may change it without a new engine: it
    changes no model or cache key) and ``recorded`` (it decides a result: kept in the result's provenance)."""
    return field(default=default, metadata={"per_call": per_call, "recorded": recorded})


@dataclass(frozen=True)
class ClipSAMConfig:
    """Settings of the ClipSAM engine. ``ClipSAMConfig()`` is the one default (336 px, SAM vit_b, the method
    document's thresholds; the module docstring says why); :meth:`preset` gives the named presets.

    Every field is checked when the config is built (:func:`~napari_clipsam.config_checks.check_config`): a
    wrong type, an out-of-range value, a template without its ``{}``, an unknown device or ``cuda`` on a machine
    without a GPU raises :class:`~napari_clipsam.errors.ConfigError` naming the field, the value and what is
    accepted. Lists are accepted for tuple fields and integers for float fields (they are converted).
    """

    # --- CLIP (method §1) -------------------------------------------------------------------
    clip_model: str = "ViT-L-14-336-quickgelu"
    """open_clip architecture name (a ``-quickgelu`` config: OpenAI weights were trained with QuickGELU),
    or ``local-dir:/path`` holding ``open_clip_config.json`` and weights."""
    clip_weights: str | None = "openai"
    """open_clip pretrained tag (downloaded once into the cache), a local checkpoint file, or ``"random"``
    (architecture only, benchmarks)."""
    image_size: int = setting(336, recorded=True)
    """CLIP input size; images are squashed (not cropped) with bicubic resize to this square. 336 is ViT-L/14@336's
    own size; the method document (and the ``accurate`` preset) uses 518 (positional embedding resized at load)."""
    feature_layers: tuple[int, ...] = setting((6, 12, 18, 24), recorded=True)
    """1-based residual-stream blocks whose patch tokens feed UMCI [choice, as APRIL-GAN/AdaCLIP]."""
    normal_states: tuple[str, ...] = NORMAL_STATES
    abnormal_states: tuple[str, ...] = ABNORMAL_STATES
    templates: tuple[str, ...] = TEMPLATES
    text_cache: bool = True
    """Keep text embeddings on disk (keyed by model, weights, object name and prompt set)."""

    # --- UMCI (method §2) -------------------------------------------------------------------
    umci_weights: str | None = None
    """Path of a trained UMCI checkpoint; ``None`` selects the training-free rough map (lower quality)."""
    umci_heads: int = 8
    """Attention heads in every UMCI attention [choice]."""
    umci_scale_kernels: tuple[int, ...] = (2, 4)
    """Scale-path average-pooling kernels (stride = kernel) [choice]."""
    temperature: float = setting(0.01, recorded=True)
    """Softmax temperature of the patch-text similarity (logits = cos / temperature)."""
    rough_sigma: float = setting(0.0, per_call=True, recorded=True)
    """Gaussian smoothing of the rough map in pixels at 518 px (scaled with image size); 0 = off.
    The published-protocol evaluation uses 4."""
    tiling: str | int = setting("auto", per_call=True, recorded=True)
    """Large images: ``"auto"`` (tiles of 2 × ``image_size`` image pixels, 25 % overlap, for an image whose short
    side is at least 1024 px and 1.5 tiles), ``"off"`` (squash the whole image to CLIP's input) or a tile
    side in image pixels. CLIP encodes each tile at its input size and the tile maps are blended into one rough
    map at image resolution, so small defects on large images keep their size for CLIP (``clip/tiling.py``).
    Folder mutual scoring tiles images of one size and compares each tile with the same tile position of the
    other images (``engine/folder_tiled.py``); images of mixed sizes it squashes under ``"auto"``."""

    # --- MMR (method §3) --------------------------------------------------------------------
    sam_model: str = "vit_b"
    """SAM variant: ``vit_b``, ``vit_l`` or ``vit_h`` (Meta's official checkpoints), or ``local-dir:/folder``
    holding ``sam_config.json`` (geometry) and ``sam.pth`` (custom or tiny models)."""
    sam_weights: str | None = None
    """Local SAM checkpoint; ``None`` downloads Meta's official file into the cache once; ``"random"`` builds
    the architecture with random weights (benchmarks only)."""
    prompt_threshold: float = setting(0.5, per_call=True, recorded=True)
    """τ_prompt: the rough map is binarised at this absolute probability (normal images give no prompts)."""
    opening_size: int = setting(3, per_call=True, recorded=True)
    """Side of the square structuring element of the morphological opening (0 or 1 = none)."""
    min_component_px: int = setting(16, per_call=True, recorded=True)
    min_component_frac: float = setting(0.0002, per_call=True, recorded=True)
    """Components smaller than max(min_component_px, min_component_frac × image area) are dropped (a folder's mutual
    map of tiled images: × one tile's area; docs/method.md#large-images-tiling)."""
    max_components: int = setting(10, per_call=True, recorded=True)
    """K: at most this many components (ranked by their peak rough value) become prompts."""
    box_growth: float = setting(0.10, per_call=True, recorded=True)
    """Each component's bounding box grows by this fraction of its size per side (clipped to the image)."""
    negative_points: bool = setting(False, per_call=True, recorded=True)
    """Add one negative point per component: the lowest rough value among the pixels of its grown box that lie outside
    every component (none when the components fill the box: a point inside a defect would call it background)."""
    sam_crops: str = setting("auto", per_call=True, recorded=True)
    """Large images: SAM refines each component on a crop around it at full resolution instead of on the whole
    image squashed to SAM's input (``mmr/crops.py``). ``"auto"``: for images the CLIP stage tiles (the ``tiling``
    rule) whose long side is at least 1.5 × SAM's input size; ``"on"``: for every image larger than SAM's input;
    ``"off"``: never. One SAM encoder run per distinct crop (components near each other share one)."""
    sam_crop_context: float = setting(0.5, per_call=True, recorded=True)
    """A component's crop contains its prompt box grown again by this fraction of its size per side (context for
    SAM); the crop is at least SAM's input size in image pixels (full resolution) and on a fixed grid."""
    levels: tuple[str, ...] = setting(("point", "box", "box+point"), per_call=True, recorded=True)
    """Prompt levels sent to SAM, each with multimask output (3 masks per prompt)."""
    min_predicted_iou: float = setting(0.5, per_call=True, recorded=True)
    """Drop SAM candidates whose predicted IoU is below this."""
    max_outside_box: float = setting(0.30, per_call=True, recorded=True)
    """Drop SAM candidates with more than this fraction of their area outside the grown box."""
    alpha: float = setting(0.5, per_call=True, recorded=True)
    """Final map = alpha × rough + (1 - alpha) × SAM map."""
    mask_threshold: float = setting(0.5, per_call=True, recorded=True)
    """τ_mask: the final mask is final map ≥ this."""

    # --- Few-shot normal references (beyond the paper; ``clip/fewshot.py``) ---------------------------------
    fewshot_weight: float = setting(0.5, per_call=True)
    """With normal references set (``engine.set_normal_references``), the rough map is
    (1 - w) × zero-shot map + w × few-shot map, before prompts are extracted; 1.0 = few-shot only, 0.0 = ignore
    the references. 0.5 adds the two with equal weight, as WinCLIP+ and APRIL-GAN's few-shot mode do."""
    fewshot_bank_size: int = 4096
    """Reference patches kept per feature layer; above it the bank is reduced by a greedy k-centre coreset
    (PatchCore). Memory is bank size × CLIP width × 4 bytes per layer (64 MiB for 4 layers of ViT-L at 4096)."""
    fewshot_neighbourhood: int = 1
    """Odd side of the PatchCore-style local aggregation window applied to patch tokens before the
    nearest-neighbour search; 1 = off (measured worse on a 16×16 grid, see docs/method.md)."""
    fewshot_augment: bool = True
    """Also put each reference's up–down and left–right flips and 90°/180°/270° rotations in the bank
    (6 views, 6 CLIP passes per reference, once: the bank is cached). Turn off when orientation matters."""

    # --- Folder mutual scoring (beyond the paper, method §5; ``clip/mutual.py``) -------------------------------
    mutual_radii: tuple[int, ...] = setting((1, 3, 5), per_call=True, recorded=True)
    """Odd sides r of the r×r neighbourhood means of the patch tokens; each (feature layer, r) pair is scored
    separately and the scores averaged (1 = the tokens themselves)."""
    mutual_interval: float = setting(0.3, per_call=True, recorded=True)
    """Interval average: a patch's score is the mean of the smallest ceil(interval × (N − 1)) of its nearest-patch
    distances to the N − 1 other images, so a defect repeated in a few other images still scores high."""
    mutual_subset_size: int = setting(8, per_call=True)
    """Images per side of each similarity product (MuSc's ``divide_num``): the product and its box sums are
    (subset × P)² floats whatever the folder size (P patches an image), beside the float32 path's radii × N² × P
    distances of one layer. Changes speed and memory, not results."""
    mutual_window: int | None = setting(None, per_call=True, recorded=True)
    """Aligned parts (boards, fixtures): compare a patch only with patches within this many grid cells of its own
    position in the other images (catches misplaced or missing parts; how it is used: ``mutual_window_mode``).
    None = everywhere."""
    mutual_window_mode: str = setting("only", per_call=True, recorded=True)
    """How a set ``mutual_window`` is used: ``"only"`` (the windowed score replaces the global one), ``"max"`` or
    ``"mean"`` (both scores are computed, each calibrated on its own, then the per-patch maximum or mean: the
    window catches a missing part, the global score keeps texture defects). Ignored when the window is None."""
    mutual_image_window: int | None = setting(2, per_call=True, recorded=True)
    """Image score (``result.image_score``, the review's worst-first order) also from the windowed mutual score
    with this window (grid cells, as ``mutual_window``): the image score is the larger of the rough map's image
    score and that windowed map's (calibrated on its own), so an image whose patches match other images only
    elsewhere ranks higher. The rough map is unchanged. On the float32 path the windowed score shares the global
    one's similarity products (about a quarter more time for the mutual stage); nothing more when the rough map
    already has that window. None = the rough map's image score alone (docs/method.md has the figures)."""
    mutual_image_top: float = setting(0.0, per_call=True, recorded=True)
    """Image score from each map: the mean of the highest ``ceil(top × patches)`` values of the 3×3-smoothed
    calibrated map, or its maximum at 0 (a fraction from 0 up to, not including, 1)."""
    mutual_image_score: str = setting("auto", per_call=True, recorded=True)
    """Which map a folder's image scores come from: ``"mutual"`` (the calibrated mutual map, with the two settings
    above: method §5.4), ``"fused"`` (the maximum of the fused, smoothed rough map at image resolution: the map
    MMR runs on and the person sees) or ``"auto"`` (fused when normal references take part in it, else mutual).
    With references the fused map's maximum is where the folder and the references agree: measured, pixel-level
    evidence the mutual score alone ignores (docs/method.md, *Image score*)."""
    mutual_precision: str = setting("auto", per_call=True, recorded=True)
    """Nearest-patch search of mutual scoring: ``"float32"``, ``"bfloat16"`` (the nearest patch found by a bf16
    product, its distance recomputed in fp32: equal to fp32 within 2⁻⁸, same ranking) or ``"auto"`` (bfloat16 on a
    GPU that computes it natively; float32 on the CPU, whose blocked path computes every radius from one product
    and is faster there than bf16, see docs/performance.md)."""
    mutual_calibration_quantile: float = setting(0.25, per_call=True, recorded=True)
    """Calibration of the mutual map (method §5.5; ``clip/mutual.calibrate``): the folder's scale of a normal
    image, ``R``, is this quantile of the images' maximum raw scores (0.25: the lowest quarter of the maxima, which
    come from normal images while a quarter of the folder is normal)."""
    mutual_calibration_ratio: float = setting(1.0, per_call=True, recorded=True)
    """The raw score, in units of ``R``, that the calibration maps to 0.5 (τ_prompt's default): 1 puts a patch as
    anomalous as the top patch of a typical normal image at 0.5; above 1 asks a defect to stand out further
    (fewer objects on normal images, more weak defects missed). Monotone: pixel AUROC does not change."""
    mutual_min_images: int = setting(5, per_call=True)
    """Fewest images a folder needs for mutual scoring; below it ``segment_folder`` refuses (use normal
    references instead)."""
    mutual_weight: float = setting(1.0, per_call=True, recorded=True)
    """Weight of the calibrated mutual map in ``segment_folder``'s fused rough map: fused = (m·mutual + c·CLIP +
    f·few-shot) / (m + c + f), the few-shot term only when normal references apply."""
    mutual_clip_weight: float = setting(0.0, per_call=True, recorded=True)
    """Weight c of the CLIP rough map (UMCI or training-free) in that fusion."""
    mutual_fewshot_weight: float = setting(2.0, per_call=True, recorded=True)
    """Weight f of the few-shot map (when normal references apply) in that fusion. 2 by default: references are
    images the person chose as good, stronger evidence than the folder's unlabelled majority, and at equal
    weights the weaker mutual map diluted the few-shot map (part, three data seeds: 0.987 / 0.986 / 0.978 at 1,
    0.989 / 0.989 / 0.980 at 2, the references alone 0.992 / 0.992 / 0.983; other categories within ±0.0005;
    docs/method.md)."""

    # --- Runtime ------------------------------------------------------------------------------
    device: str = "auto"
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``."""
    dtype: str = setting("float32", recorded=True)
    """``float32``, or ``bfloat16`` autocast of the torch modules: the GPU option; on CPUs with AMX/AVX512-BF16 it
    also speeds up torch encoders, on older CPUs it is slower (``napari-clipsam bench`` compares). The OpenVINO
    encoders use ``sam_precision`` / ``clip_precision`` instead."""
    backend: str = setting("auto", recorded=True)
    """Who runs the two encoders (SAM image encoder, CLIP vision tower): ``"torch"``, ``"openvino"`` (on the CPU;
    ``pip install "napari-clipsam[openvino]"``; each encoder is converted once, "preparing the fast CPU model",
    and cached on disk) or ``"auto"``: OpenVINO on the CPU when installed, torch otherwise and on CUDA. See
    :mod:`napari_clipsam.engine.backends`; docs/performance.md has measured speed-ups."""
    sam_precision: str = setting("auto", recorded=True)
    """SAM image encoder precision under OpenVINO: ``"float32"``, ``"bfloat16"`` or ``"auto"`` (bfloat16 where the
    CPU has native bf16, AMX or AVX-512 BF16, detected at run time; float32 elsewhere). SAM masks measured
    IoU ≥ 0.98 against float32. ``"int8"``: quantised once with NNCF (``pip install "napari-clipsam[int8]"``),
    opt-in, see docs/performance.md for its measured speed and masks. The torch backend uses ``dtype`` instead."""
    clip_precision: str = setting("float32", recorded=True)
    """CLIP vision tower precision under OpenVINO (same choices as ``sam_precision``), separate because the rough
    map depends on small differences of CLIP features; float32 until bf16 is confirmed on real weights
    (``napari-clipsam eval`` with both)."""
    sam_decoder_backend: str = setting("torch", recorded=True)
    """Who runs SAM's mask decoder (every segment's and refine's prompts): ``"torch"`` (default) or
    ``"openvino"`` (with an OpenVINO ``backend`` only; float32, converted once and cached like the encoders,
    logits within 1e-5 of torch's). Opt-in: it made a one-edit refine 156 → 125 ms on 2 loaded cores
    (docs/performance.md) but costs a one-time conversion of 8–19 s when an engine is loaded."""
    sam_attention_bands: int = 8
    """Under OpenVINO, SAM's global-attention blocks are converted to compute their attention this many bands of
    query rows at a time (:mod:`napari_clipsam.engine.backends.lean_sam`): the same output (tested within 1e-5),
    with intermediates of 1/bands the size. The compiled SAM keeps its working memory, so this is what bounds
    it: vit_b in float32 899 → 227 MiB at 8 bands (docs/performance.md). 1 converts the library's attention as
    it is. Part of the converted model's cache key."""
    cache_bytes: int = 512 * 1024**2
    """Bound of the engine's in-memory per-image cache, all kinds together: CLIP features, SAM embeddings (4 MiB an
    image at full size) and decoded prompts (bit-packed masks, 3·H·W/8 bytes a prompt level); least recently
    used entries go first. Results hold none of it, so a refine after eviction embeds the image again (or reads
    the on-disk store)."""
    embedding_cache_bytes: int = 2 * 1024**3
    """Bound of the on-disk SAM embedding cache (``<cache>/embeddings``; 4 MiB per image, least recently used
    entries go first): reopening an image skips SAM's encoder. 0 disables it."""
    feature_cache_bytes: int = 2 * 1024**3
    """Bound of the on-disk CLIP feature cache of folder mutual scoring (``<cache>/features``; per image the
    feature layers' patch tokens, 9.4 MiB at ViT-L/14@336, least recently used entries going first): a resumed or
    repeated ``segment_folder`` does not run CLIP's vision tower again. 0 disables it."""
    keep_patch_tokens: bool = setting(False, per_call=True)
    """``segment`` of an untiled image in the training-free mode keeps the feature layers' patch tokens beside
    the rough map's tokens in the in-memory cache (one CLIP pass gives both), so a ``segment_folder`` that follows
    does not run CLIP on that image again. The folder review sets it for its first image, which is segmented
    before the folder is scored. Costs cache memory only (9.4 MiB more an image at ViT-L/14@336)."""
    decoder_batch_size: int | None = setting(None, per_call=True)
    """Most prompts per SAM decoder call. None = auto: a whole prompt level in one call on CUDA, chunks of 2 on
    a CPU. SAM's decoder repeats the 64×64 image embedding for every prompt, so on a CPU large batches are
    memory-bound and slower per prompt than small ones (see ``napari-clipsam bench``); results are identical."""
    embed_without_prompts: bool = setting(True, per_call=True)
    """Compute SAM's image embedding even when the rough map yields no prompts, so that later ``refine``
    calls (a user adding points) never run an encoder. Batch evaluation can set False to skip SAM's encoder
    on images CLIP finds normal."""

    @classmethod
    def preset(cls, name: str = DEFAULT_PRESET, **overrides: Any) -> ClipSAMConfig:
        """A named preset (:data:`PRESETS`): the default config with :data:`PRESET_CHANGES` ``[name]``, then
        ``overrides``. ``"cpu"`` is the default itself; ``"accurate"`` is 518 px + SAM vit_h (the paper's)."""
        if name not in PRESET_CHANGES:
            raise ConfigError(f"Unknown preset {name!r}; choose one of {PRESETS}.")
        return cls().replace(**{**PRESET_CHANGES[name], **overrides})

    @classmethod
    def fields_where(cls, role: str) -> tuple[str, ...]:
        """Names of the fields whose metadata sets ``role`` (``"per_call"`` or ``"recorded"``), in field order."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get(role))

    def replace(self, **changes: Any) -> ClipSAMConfig:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def __post_init__(self) -> None:
        # frozen: the checks normalise fields (tuples, ints, paths) through object.__setattr__, once, here
        check_config(self)

    def prompt_set_hash(self) -> str:
        """A short hash of the prompt lists: part of the text-embedding cache key and of UMCI checkpoints."""
        blob = json.dumps([list(self.normal_states), list(self.abnormal_states), list(self.templates)])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of every field (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipSAMConfig:
        """Inverse of :meth:`to_dict` (lists become tuples); unknown keys raise ConfigError naming them."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f"Unknown ClipSAMConfig fields {unknown}; known fields: {sorted(names)}")
        return cls(**data)

    def thresholds(self) -> dict[str, Any]:
        """The method settings that decide a result (fields marked ``recorded``), recorded in every result's
        provenance."""
        d = self.to_dict()
        return {k: d[k] for k in RECORDED_FIELDS}


PER_CALL_FIELDS = ClipSAMConfig.fields_where("per_call")
"""Settings a call may change (``ClipSAM.using``, ``settings=``): they change no model or cache key."""
RECORDED_FIELDS = ClipSAMConfig.fields_where("recorded")
"""Settings that decide a result, recorded in its provenance (:meth:`ClipSAMConfig.thresholds`)."""


def preset_help() -> str:
    """What each preset runs, for help texts and tooltips, e.g. ``"cpu: CLIP at 336 px + SAM vit_b (default);
    accurate: CLIP at 518 px + SAM vit_h"``."""
    def one(name: str) -> str:
        cfg = ClipSAMConfig.preset(name)
        return f"{name}: CLIP at {cfg.image_size} px + SAM {cfg.sam_model}{' (default)' * (name == DEFAULT_PRESET)}"
    return "; ".join(one(name) for name in PRESETS)
