"""What the subcommands share: engine options, building the engine, progress bars, atomic output files and
clean error reporting.

Exit codes of every subcommand: 0 success, 1 some work items failed (reported, the others were done),
2 bad input or unavailable weights (one message on stderr, no traceback), 130 interrupted.

Heavy libraries (torch, open_clip, SAM) are imported inside the functions, so ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from ..config import DEFAULT_PRESET, PRESETS, preset_help
from ..config_checks import BACKENDS, DTYPES, PRECISIONS, SAM_PRECISIONS
from ..errors import InvalidInputError, require_file
from ..io.strict_json import json_safe  # noqa: F401 (used by the subcommands)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
TRAINING_FREE_NOTE = ("note: no --umci checkpoint given: the rough map is the training-free fallback (CLIP "
                      "value-value attention), lower quality than a trained UMCI (train one with "
                      "`napari-clipsam train`).")


def training_free_note(mutual: bool, clip_weight: float) -> str:
    """What an engine without a UMCI checkpoint means for this run's rough map: the training-free fallback, or,
    when folder mutual scoring makes the rough map, that fallback's share in it (``mutual_clip_weight``)."""
    if not mutual:
        return TRAINING_FREE_NOTE
    if clip_weight <= 0:
        return ("note: no --umci checkpoint given; the rough map is folder mutual scoring's (each image against the "
                "others), which does not use the training-free CLIP map (mutual_clip_weight 0).")
    return (f"note: no --umci checkpoint given; the rough map fuses folder mutual scoring with the training-free CLIP "
            f"map (mutual_clip_weight {clip_weight:g}), which is lower quality than a trained UMCI.")


def note(message: str) -> None:
    """A one-line message for the user, on stderr (stdout carries the results)."""
    print(message, file=sys.stderr, flush=True)


def split_list(values: Iterable[str] | None) -> list[str] | None:
    """``["a,b", "c"]`` → ``["a", "b", "c"]`` (lists may be given space- or comma-separated)."""
    if values is None:
        return None
    out = [v.strip() for item in values for v in str(item).split(",") if v.strip()]
    return out or None


# ----------------------------------------------------------------------------------------------- options
def add_dataset_options(parser: argparse.ArgumentParser, verb: str) -> None:
    """``--dataset-root``, ``--layout`` and ``--categories`` (``verb``: what is done with the categories)."""
    parser.add_argument("--dataset-root", type=Path, required=True, metavar="FOLDER",
                        help="the dataset's top folder (its layout: --layout)")
    parser.add_argument("--layout", choices=("auto", "mvtec", "visa", "folder", "review"), default="auto",
                        help="dataset layout (default: detected from the folder); review: a folder review's labels "
                             "folder (its accepted labels)")
    parser.add_argument("--categories", nargs="+", metavar="NAME", help=f"categories to {verb} (default: all)")


def add_engine_options(parser: argparse.ArgumentParser, *, umci: bool = True, sam: bool = True) -> None:
    """The model options: preset, config file, device, dtype, CLIP, SAM and UMCI weights."""
    g = parser.add_argument_group("engine")
    g.add_argument("--preset", choices=PRESETS, default=DEFAULT_PRESET, help=preset_help())
    g.add_argument("--config", metavar="FILE|JSON",
                   help="ClipSAMConfig fields as a JSON file or inline JSON ('{\"alpha\": 0.3}'); applied over the "
                        "preset, the flags below override it")
    g.add_argument("--device", help="auto (CUDA when present, default), cpu, cuda or cuda:N")
    g.add_argument("--dtype", choices=DTYPES, help="float32 (default) or bfloat16 autocast")
    g.add_argument("--backend", choices=BACKENDS,
                   help="who runs the SAM and CLIP encoders: auto (OpenVINO on the CPU when installed, default), "
                        "torch, or openvino (converted once per model and cached; see docs/performance.md)")
    g.add_argument("--sam-precision", choices=SAM_PRECISIONS,
                   help="SAM image encoder precision with OpenVINO (default auto: bfloat16 where the CPU has native "
                        "bf16, AMX or AVX-512 BF16; int8: quantised once with NNCF, opt-in, needs napari-clipsam[int8])")
    g.add_argument("--clip-precision", choices=PRECISIONS,
                   help="CLIP vision tower precision with OpenVINO (default float32)")
    g.add_argument("--image-size", type=int, metavar="PX",
                   help="CLIP input size (default: the preset's, or the UMCI checkpoint's)")
    g.add_argument("--clip-model", metavar="NAME",
                   help="open_clip architecture (default ViT-L-14-336-quickgelu) or local-dir:FOLDER holding "
                        "open_clip_config.json and weights")
    g.add_argument("--clip-weights", metavar="TAG|FILE",
                   help="open_clip weights tag (default openai, downloaded once into the cache) or a local "
                        "checkpoint file of that architecture (offline sites)")
    if sam:
        g.add_argument("--tau-prompt", type=float, metavar="T",
                       help="rough-map threshold that makes SAM prompts (prompt_threshold, default 0.5)")
        g.add_argument("--tau-mask", type=float, metavar="T",
                       help="final-map threshold of the masks (mask_threshold, default 0.5)")
        g.add_argument("--alpha", type=float, metavar="A",
                       help="final map = A × rough map + (1 − A) × SAM map (default 0.5)")
        g.add_argument("--sam-model", metavar="NAME",
                       help="vit_b, vit_l, vit_h (default: the preset's) or local-dir:FOLDER holding "
                            "sam_config.json and sam.pth")
        g.add_argument("--sam-checkpoint", metavar="FILE",
                       help="local SAM checkpoint (default: Meta's file, downloaded once into the cache and "
                            "checked; see `napari-clipsam weights`)")
    if umci:
        g.add_argument("--umci", type=Path, metavar="CHECKPOINT",
                       help="trained UMCI checkpoint (`napari-clipsam train`); without it the lower-quality "
                            "training-free rough map is used")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")


def engine_config(args: argparse.Namespace, **overrides):
    """The :class:`~napari_clipsam.config.ClipSAMConfig` the options describe (validated).

    Order: preset, then ``--config`` JSON, then flags, then ``overrides``. With ``--umci``, the checkpoint's
    feature layers are used, and its training size when ``--image-size`` is not given.
    """
    from ..config import ClipSAMConfig

    cfg = ClipSAMConfig.preset(args.preset)
    if getattr(args, "config", None) is not None:
        data = read_config_option(str(args.config))
        cfg = ClipSAMConfig.from_dict({**cfg.to_dict(), **data})
    flags = {"device": "device", "dtype": "dtype", "backend": "backend", "sam_precision": "sam_precision",
             "clip_precision": "clip_precision", "image_size": "image_size", "clip_model": "clip_model",
             "clip_weights": "clip_weights", "sam_model": "sam_model", "sam_checkpoint": "sam_weights",
             "tau_prompt": "prompt_threshold", "tau_mask": "mask_threshold", "alpha": "alpha"}
    changes = {field: getattr(args, opt) for opt, field in flags.items() if getattr(args, opt, None) is not None}
    umci = getattr(args, "umci", None)
    if umci is not None:
        from ..weights.umci_checkpoint import read_umci

        ckpt = read_umci(umci)
        changes.update(umci_weights=str(Path(umci).expanduser()), feature_layers=tuple(ckpt["hparams"]["layers"]))
        if getattr(args, "image_size", None) is None:
            changes["image_size"] = int(ckpt["image_size"])
    changes.update(overrides)
    cfg = cfg.replace(**changes)
    if cfg.sam_model.startswith("local-dir:") and changes.get("sam_weights") not in (None, "random"):
        raise InvalidInputError("--sam-checkpoint cannot be combined with a local-dir: SAM (the folder holds its own "
                                "sam.pth); give one or the other.")
    check_local_files(cfg)
    return cfg


def read_config_option(value: str) -> dict:
    """``--config``: inline JSON (starting with ``{``) or the path of a JSON file → a dict of ClipSAMConfig fields;
    an unknown field is refused naming the nearest known one."""
    import difflib
    import dataclasses

    from ..config import ClipSAMConfig

    inline = value.lstrip().startswith("{")
    where = "--config JSON" if inline else f"Config file {Path(value).expanduser()}"
    if inline:
        text = value
    else:
        path = Path(value).expanduser()
        require_file(path, "Config file", "Give a JSON file of ClipSAMConfig fields, or inline JSON such as "
                                          "'{\"alpha\": 0.3}'.")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"{where} is not valid JSON: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{where} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidInputError(f"{where} must hold a JSON object of ClipSAMConfig fields.")
    names = [f.name for f in dataclasses.fields(ClipSAMConfig)]
    for key in data:
        if key not in names:
            near = difflib.get_close_matches(str(key), names, n=1)
            hint = f" Did you mean {near[0]!r}?" if near else " See docs/api.md for the fields."
            raise InvalidInputError(f"{where}: unknown ClipSAMConfig field {key!r}.{hint}")
    return data


def check_local_files(cfg) -> None:
    """Refuse missing or damaged local model files named by ``cfg`` before any model is loaded (cheap checks:
    folders, file kinds, a local SAM's config, a UMCI checkpoint's keys); raises WeightsUnavailableError."""
    from ..errors import WeightsUnavailableError
    from ..weights.loaders import RANDOM, _looks_like_path
    from ..weights.sam_arch import read_local_dir
    from ..weights.umci_checkpoint import read_umci

    if cfg.sam_model.startswith("local-dir:"):
        read_local_dir(Path(cfg.sam_model.split(":", 1)[1]).expanduser())
    if cfg.clip_model.startswith("local-dir:"):
        folder = Path(cfg.clip_model.split(":", 1)[1]).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise WeightsUnavailableError(f"CLIP folder {folder} has no open_clip_config.json; a 'local-dir:' CLIP is "
                                          "a folder holding open_clip_config.json and its weights file.")
    for what, value in (("SAM checkpoint", cfg.sam_weights), ("CLIP weights file", cfg.clip_weights)):
        if value not in (None, RANDOM) and (what.startswith("SAM") or _looks_like_path(value)):
            path = Path(value).expanduser()
            if not path.is_file():
                kind = "is a folder, not a file" if path.is_dir() else "does not exist"
                raise WeightsUnavailableError(f"{what} {path} {kind}.")
    if cfg.umci_weights:
        read_umci(cfg.umci_weights)


def without_sam(cfg):
    """A config for work that never calls SAM (training, rough-only evaluation): Meta's checkpoints are not
    downloaded or read; the smallest architecture is built with random weights instead. A ``local-dir:`` SAM
    is kept (it is a local file)."""
    if cfg.sam_model.startswith("local-dir:"):
        return cfg
    return cfg.replace(sam_model="vit_b", sam_weights="random")


# ----------------------------------------------------------------------------------------------- engine
class StageBars:
    """``progress(stage, fraction)`` callback drawing one tqdm bar per download and a line at the start and end of
    an OpenVINO conversion ("preparing the fast CPU model, once: …"); other stages are quiet.

    Bars count bytes when the file is in the weights registry (its size is known), else per mille.
    """

    def __init__(self, enabled: bool = True):
        self.enabled, self.bars, self.started = enabled, {}, {}

    def __call__(self, stage: str, fraction: float) -> None:
        if self.enabled and stage.startswith("preparing"):
            import time

            if fraction <= 0.0:
                self.started[stage] = time.perf_counter()
                note(stage)
            elif fraction >= 1.0:  # between the two: the conversion's ticks (the dock shows them)
                note(f"{stage}: done in {time.perf_counter() - self.started.pop(stage, time.perf_counter()):.0f} s")
            return
        if not self.enabled or not stage.startswith("downloading"):
            return
        from tqdm.auto import tqdm

        from ..weights.registry import SAM_CHECKPOINTS

        bar = self.bars.get(stage)
        if bar is None:
            size = next((s.size for s in SAM_CHECKPOINTS.values() if stage.endswith(s.filename)), None)
            unit = dict(total=size, unit="B", unit_scale=True, unit_divisor=1024) if size else \
                dict(total=1000, unit="‰")
            bar = self.bars[stage] = tqdm(desc=stage, dynamic_ncols=True, **unit)
        bar.update(int(fraction * bar.total) - bar.n)
        if fraction >= 1.0:
            bar.close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def build_engine(cfg, progress: bool = True, sam: bool = True):
    """Load the engine (:meth:`ClipSAM.from_config`), with download bars; says which rough map is used.
    ``sam=False``: the work never calls SAM (training, rough-only evaluation), so its encoder is not prepared."""
    from ..engine.clipsam import ClipSAM

    bars = StageBars(progress)
    try:
        engine = ClipSAM.from_config(cfg, progress=bars, prepare_sam=sam)
    finally:
        bars.close()
    return engine


def describe_engine(engine, sam: bool = True) -> str:
    """One line: models, rough-map mode (when ``sam``, i.e. when the engine segments) and device."""
    ident = engine.identity
    size = engine.vision.image_size
    native = _native_clip_size(engine.config.clip_model)
    resized = f" (its native size {native} px; position embedding resized)" if native and native != size else ""
    text = f"CLIP {ident.get('clip_model')} ({_short(ident.get('clip_weights'))}) at {size} px{resized}"
    if sam:
        text += (f", SAM {ident.get('sam_model')} ({_short(ident.get('sam_weights'))}), rough map: "
                 f"{engine.provenance('')['rough_map']}")
    plan = engine.backend.plan
    encoders = "torch" if plan.name == "torch" else f"OpenVINO (SAM {plan.sam_precision}, CLIP {plan.clip_precision})"
    return f"{text}, device {engine.device}, encoders on {encoders}"


def _native_clip_size(clip_model: str) -> int | None:
    """The input size a CLIP architecture was made for (its open_clip config), or None when unknown."""
    try:
        if clip_model.startswith("local-dir:"):
            cfg = json.loads((Path(clip_model.split(":", 1)[1]).expanduser() / "open_clip_config.json")
                             .read_text(encoding="utf-8"))["model_cfg"]
        else:
            import open_clip

            cfg = open_clip.get_model_config(clip_model) or {}
        size = cfg["vision_cfg"]["image_size"]
        return int(size[0] if isinstance(size, (list, tuple)) else size)
    except Exception:  # an unknown architecture: say only what is used
        return None


def _short(weights_id) -> str:
    s = str(weights_id)
    return s[:19] + "…" if s.startswith("sha256:") and len(s) > 20 else s


# ----------------------------------------------------------------------------------------------- output
def write_text_atomic(path: Path, text: str) -> Path:
    """Write a text file all at once (temporary sibling, then rename), creating its folder."""
    from ..io.atomic import AtomicBatch

    path = Path(path).expanduser()
    with AtomicBatch() as batch:
        batch.stage(path, text.encode("utf-8"))
        batch.commit()
    return path


# ----------------------------------------------------------------------------------------------- errors
def _warning_as_note(message, category, filename, lineno, file=None, line=None) -> None:
    """How a warning reaches a CLI user: ClipSAM's own UserWarnings (a checkpoint used differently from its
    training, a config fitted to its models) as a ``note: …`` line like the CLI's other notes; any other warning
    in Python's usual form, file and line included (it comes from a library: worth reporting)."""
    import warnings

    if issubclass(category, UserWarning) and f"{os.sep}napari_clipsam{os.sep}" in str(filename):
        note(f"note: {' '.join(str(message).split())}")
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def run_guarded(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a subcommand. A user error (:class:`~napari_clipsam.errors.ClipSAMUserError`: a bad setting, argument,
    file, or unavailable weights) becomes an ``error: …`` message on stderr (one line, or the message's own lines
    when it lists several things, e.g. missing weights files) and exit code 2 (no traceback, unless
    ``--traceback``). Any other exception is a bug: it propagates with its traceback (exit code 1)."""
    import warnings

    from ..errors import ClipSAMUserError

    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_as_note  # the stdlib's documented hook, for this run only
            return int(func(args) or 0)
    except KeyboardInterrupt:
        note("interrupted")
        return EXIT_INTERRUPTED
    except ClipSAMUserError as exc:
        if getattr(args, "traceback", False):  # asked for: the traceback, then the usual line and exit code
            import traceback

            traceback.print_exc()
        lines = [line[:len(line) - len(line.lstrip())] + " ".join(line.split()) for line in str(exc).splitlines()]
        note("error: " + "\n".join(line for line in lines if line.strip()))  # a message's own lines (lists) are kept
        return EXIT_USAGE
