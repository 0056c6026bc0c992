"""``napari-clipsam weights list|download|verify``: the model files ClipSAM uses and the local cache.

Entries: ``vit_b``, ``vit_l``, ``vit_h`` (Meta's SAM checkpoints, with SHA-256 and size from the registry) and
``clip`` (the default CLIP weights, OpenAI ViT-L/14@336, fetched by open_clip). Files live in the cache folder
(``$NAPARI_CLIPSAM_CACHE`` or the user cache folder): ``<cache>/sam/<file>`` and ``<cache>/clip/``.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..errors import InvalidInputError, MissingFileError
from ..config_checks import SAM_MODELS as SAM_NAMES
from .common import EXIT_FAILED, EXIT_OK, StageBars, note

CLIP = "clip"
NAMES = (CLIP, *SAM_NAMES)


def _preset_use() -> dict[str, str]:
    """Weights name → the presets that use it (``"-"`` for none), from the presets themselves."""
    from ..config import PRESETS, ClipSAMConfig

    configs = {name: ClipSAMConfig.preset(name) for name in PRESETS}
    default = ClipSAMConfig()
    use = {CLIP: [p for p, c in configs.items() if (c.clip_model, c.clip_weights) == (default.clip_model,
                                                                                       default.clip_weights)]}
    use.update({sam: [p for p, c in configs.items() if c.sam_model == sam] for sam in SAM_NAMES})
    return {name: ", ".join(presets) or "-" for name, presets in use.items()}


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("weights", help="list, download or verify model weights in the cache",
                              description=__doc__.split("\n\n", 1)[1].replace("``", "") if __doc__ else None)
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="show every model file, its cache path and whether it is present")
    ls.set_defaults(func=run_list)
    dl = sub.add_parser("download", help="download files into the cache (with progress and SHA-256 check)")
    dl.add_argument("names", nargs="+", choices=(*NAMES, "all"), metavar="NAME",
                    help=f"{', '.join(NAMES)} or all")
    dl.add_argument("--url", metavar="URL",
                    help="download a SAM file from this URL instead of Meta's (an internal mirror or a file:// "
                         "path); the registry's SHA-256 is still checked. One SAM name only.")
    dl.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    dl.set_defaults(func=run_download)
    vf = sub.add_parser("verify", help="check the SHA-256 of SAM files in the cache (or of --file)")
    vf.add_argument("names", nargs="*", metavar="NAME",
                    help=f"{', '.join(SAM_NAMES)} (default: every SAM file present in the cache)")
    vf.add_argument("--file", type=Path, metavar="PATH",
                    help="check this file (e.g. copied by hand) against one NAME's checksum instead of the cache")
    vf.set_defaults(func=run_verify)
    for nested in (ls, dl, vf):  # as on every subcommand (cli/__init__.py), also after these
        nested.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                            help="show the full traceback of errors (debugging)")
    return p


def sam_folder() -> Path:
    from ..weights.registry import cache_dir

    return cache_dir() / "sam"


def clip_folder() -> Path:
    from ..weights.registry import cache_dir

    return cache_dir() / "clip"


def _clip_spec() -> tuple[str, str, dict]:
    """(model, tag, open_clip pretrained config) of the default CLIP weights."""
    import open_clip

    from ..config import ClipSAMConfig

    cfg = ClipSAMConfig()
    return cfg.clip_model, cfg.clip_weights, open_clip.get_pretrained_cfg(cfg.clip_model, cfg.clip_weights)


def clip_cached(spec: dict) -> Path | None:
    """The cached CLIP weights file open_clip would use, if present (HF hub layout or the URL's file name)."""
    folder = clip_folder()
    hub = spec.get("hf_hub", "").strip("/")
    if hub:
        repo = hub if hub.count("/") == 1 else hub.rsplit("/", 1)[0]
        snaps = folder / ("models--" + repo.replace("/", "--")) / "snapshots"
        found = sorted(p for p in snaps.glob("*/*") if p.suffix in (".safetensors", ".bin", ".pt", ".pth"))
        if found:
            return found[0]
    url_file = folder / Path(spec.get("url", "")).name if spec.get("url") else None
    return url_file if url_file is not None and url_file.is_file() else None


def _status(path: Path, size: int) -> str:
    if not path.is_file():
        return "absent"
    actual = path.stat().st_size
    return "present" if actual == size else f"wrong size ({actual:,} bytes, run verify)"


def run_list(args) -> int:
    from ..weights.registry import CACHE_ENV, SAM_CHECKPOINTS, cache_dir

    print(f"cache folder: {cache_dir()} (set {CACHE_ENV} to move it)")
    print(f"{'name':<6} {'presets':<15} {'size':>9} {'status':<10} path / source")
    model, tag, spec = _clip_spec()
    use = _preset_use()
    cached = clip_cached(spec)
    print(f"{CLIP:<6} {use[CLIP]:<15} {'~0.9 GB':>9} {'present' if cached else 'absent':<10} "
          f"{cached or clip_folder()}  ({model} '{tag}', {spec.get('url')})")
    for name, s in SAM_CHECKPOINTS.items():
        path = sam_folder() / s.filename
        size = f"{s.size / 1e9:.2f} GB"
        print(f"{name:<6} {use[name]:<15} {size:>9} {_status(path, s.size):<10} {path}  ({s.url}, "
              f"sha256 {s.sha256[:12]}…)")
    return EXIT_OK


def run_download(args) -> int:
    from ..weights.download import fetch
    from ..weights.registry import SAM_CHECKPOINTS

    names = list(NAMES) if "all" in args.names else list(dict.fromkeys(args.names))
    if args.url is not None and (len(names) != 1 or names[0] not in SAM_NAMES):
        raise InvalidInputError("--url replaces the source of one SAM file: give exactly one of "
                                f"{', '.join(SAM_NAMES)} with it.")
    for name in names:
        if name == CLIP:
            path = _download_clip()
        else:
            spec = SAM_CHECKPOINTS[name]
            if args.url is not None:
                spec = dataclasses.replace(spec, url=args.url)
            bars = StageBars(args.progress)
            try:
                path = fetch(spec, sam_folder(), progress=bars)
            finally:
                bars.close()
        print(f"{name}: {path}")
    return EXIT_OK


def _download_clip() -> Path:
    import open_clip

    from ..errors import WeightsUnavailableError

    from ..weights.download import fetch
    from ..weights.registry import CLIP_CHECKPOINTS

    model, tag, spec = _clip_spec()
    if (model, tag) in CLIP_CHECKPOINTS:  # the file the engine looks for: checksummed, resumable by hand
        bars = StageBars(True)
        try:
            return fetch(CLIP_CHECKPOINTS[(model, tag)], clip_folder(), progress=bars)
        finally:
            bars.close()
    try:
        target = open_clip.download_pretrained(spec, cache_dir=str(clip_folder()))
    except Exception as exc:  # open_clip / huggingface_hub raise many types (network, offline mode, 404)
        raise WeightsUnavailableError(
            f"Could not download the CLIP weights {model} '{tag}' into {clip_folder()}: {exc}. On a machine "
            f"without internet access, download {spec.get('url')} elsewhere and pass the file with "
            f"--clip-weights FILE (with --clip-model {model}).") from exc
    if not target:
        raise WeightsUnavailableError(f"open_clip has no download source for {model} '{tag}'.")
    return Path(target)


def run_verify(args) -> int:
    from ..errors import WeightsUnavailableError
    from ..weights.download import verify
    from ..weights.registry import SAM_CHECKPOINTS

    unknown = [n for n in args.names if n not in SAM_NAMES]
    others = [n for n in unknown if n in NAMES]
    if others:
        raise InvalidInputError(f"`weights verify` checks SAM files ({', '.join(SAM_NAMES)}); {', '.join(others)} "
                                "is checked against its SHA-256 each time it is loaded (and by `weights download`).")
    if unknown:
        raise InvalidInputError(f"Unknown SAM weights {', '.join(unknown)}; choose from {', '.join(SAM_NAMES)}.")
    if args.file is not None:
        if len(args.names) != 1:
            raise InvalidInputError(f"--file needs exactly one NAME ({', '.join(SAM_NAMES)}) whose checksum to check.")
        checks = [(args.names[0], Path(args.file).expanduser())]
        if not checks[0][1].is_file():
            raise MissingFileError(f"--file {checks[0][1]} does not exist (or is not a file).")
    else:
        names = args.names or [n for n in SAM_NAMES if (sam_folder() / SAM_CHECKPOINTS[n].filename).exists()]
        if not names:
            print(f"No SAM file in {sam_folder()} to verify (`napari-clipsam weights download vit_b` fetches one).")
            return EXIT_OK
        checks = [(n, sam_folder() / SAM_CHECKPOINTS[n].filename) for n in names]
    bad = 0
    for name, path in checks:
        try:
            if args.file is not None:
                _verify_given(path, SAM_CHECKPOINTS[name])
            else:
                verify(path, SAM_CHECKPOINTS[name])
        except WeightsUnavailableError as exc:
            bad += 1
            note(f"{name}: FAILED: {exc}")
        else:
            print(f"{name}: OK ({path}, sha256 {SAM_CHECKPOINTS[name].sha256[:12]}…)")
    return EXIT_FAILED if bad else EXIT_OK


def _verify_given(path: Path, spec) -> None:
    """``--file``: the person's own copy, checked and left where it is (the cache's advice, to delete it and
    copy the download into the cache folder, is not for a file they chose)."""
    from ..errors import WeightsUnavailableError
    from ..io.verified import sha256_memoised

    digest = sha256_memoised(path)
    if digest != spec.sha256:
        raise WeightsUnavailableError(
            f"{path} is not the official {spec.name} file: its SHA-256 is {digest}, the official one's "
            f"{spec.sha256} (another file, or an incomplete copy). The file was left as it is; copy {spec.url} "
            "again and check the copy.")
