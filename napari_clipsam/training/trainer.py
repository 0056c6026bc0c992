"""Train the UMCI head on frozen CLIP (method §2), with a checkpoint every epoch and exact resume.

    engine = ClipSAM.from_config(config)                    # CLIP (frozen) and the text prompts
    dataset = open_dataset("visa", split="test")            # the auxiliary dataset, with masks
    report = train_umci(engine, dataset, TrainSettings(epochs=15), out="umci_visa.pt")

CLIP features do not change during training, so they are computed once per image (in dataset order) and
kept for the run: in memory when they fit :attr:`TrainSettings.cache_bytes`, else in a temporary memory-mapped
file. Batches hold images of one category (one text embedding ``T`` per batch); their order comes from a
seeded generator whose state is checkpointed, so a resumed run gives the same weights as an uninterrupted one
(on the CPU; CUDA kernels may be nondeterministic).
"""
from __future__ import annotations

import functools
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..clip.umci import UMCI
from ..errors import Cancelled, InvalidInputError, TrainingDivergedError
from ..weights.umci_checkpoint import check_compatible, read_umci, save_umci
from .losses import FOCAL_GAMMA, umci_loss
from .resize import squash_mask

Log = Callable[[str], None]


@dataclass
class TrainSettings:
    """Training hyper-parameters (defaults: method §2, as APRIL-GAN)."""

    epochs: int = 3
    """Total epochs (a resumed run continues until this many are done)."""
    batch_size: int = 8
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    seed: int = 111
    """Seeds the UMCI initialisation and the batch order."""
    focal_gamma: float = FOCAL_GAMMA
    cache_bytes: int = 8 << 30
    """Memory for cached CLIP features; beyond it they are kept in a memory-mapped file in ``cache_dir``."""
    cache_dir: str | None = None
    """Folder for the memory-mapped feature file (default: the system's temporary folder)."""
    progress: bool = True
    """Show tqdm progress bars (on stderr)."""


@dataclass
class TrainReport:
    """What a training run did."""

    umci: UMCI
    epochs: int
    epoch_losses: list[float]
    parameters: int
    images: int
    feature_seconds: float
    train_seconds: float
    checkpoint: Path | None = None
    resumed_from_epoch: int = 0
    previous_seconds: float = 0.0
    """Feature and training time of the epochs done before a resume (from the checkpoint)."""
    notes: list[str] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        return self.epoch_losses[-1] if self.epoch_losses else float("nan")


def object_name(category: str) -> str:
    """The text prompt object of a dataset category: ``"metal_nut"`` → ``"metal nut"``."""
    return category.replace("_", " ").strip()


def clip_widths(engine) -> tuple[int, int]:
    """``(in_dim, dim)``: CLIP's vision width and joint embedding width (as the engine's loader checks them)."""
    proj = engine.clip_model.text_projection
    dim = proj.shape[1] if isinstance(proj, torch.Tensor) else proj.out_features
    return int(engine.vision.width), int(dim)


def describe_dataset(dataset) -> dict:
    """JSON-friendly summary of a training set: root, layout, categories and per-category counts (and, for a
    dataset with a ``provenance()`` method such as a review's, what it returns, under ``"source"``)."""
    counts = {c: {"images": 0, "anomalous": 0} for c in dataset.categories}
    for s in dataset.samples:
        counts[s.category]["images"] += 1
        counts[s.category]["anomalous"] += int(s.label)
    out = {"root": str(Path(dataset.root).resolve()), "layout": getattr(dataset, "layout", "generic"),
           "categories": list(dataset.categories), "images": len(dataset), "counts": counts}
    if callable(getattr(dataset, "provenance", None)):
        out["source"] = dataset.provenance()
    return out


def _data_summary(data: dict) -> str:
    counts = data.get("counts") or {}
    return ", ".join(f"{c}: {counts.get(c, {}).get('images', '?')} images" for c in data.get("categories") or [])


class FeatureStore:
    """Frozen CLIP patch tokens of every training image, one (N, C, h, w) array per layer."""

    def __init__(self, n: int, shapes: list[tuple[int, int, int]], budget: int, folder: str | None):
        per_image = sum(int(np.prod(s)) for s in shapes)
        self._tmp = None
        if n * per_image * 4 <= budget:
            self.arrays = [np.empty((n, *s), np.float32) for s in shapes]
        elif n * per_image * 2 <= budget:
            self.arrays = [np.empty((n, *s), np.float16) for s in shapes]
        else:  # too large for memory: half precision on disk
            self._tmp = tempfile.TemporaryDirectory(prefix="clipsam-features-", dir=folder)
            self.arrays = [np.lib.format.open_memmap(f"{self._tmp.name}/layer{i}.npy", "w+", np.float16, (n, *s))
                           for i, s in enumerate(shapes)]
        self.where = "disk" if self._tmp else "memory"

    def put(self, index: slice, feats: list[torch.Tensor]) -> None:
        for arr, f in zip(self.arrays, feats):
            arr[index] = f.detach().float().cpu().numpy()

    def get(self, idx: list[int], device) -> list[torch.Tensor]:
        return [torch.from_numpy(np.asarray(arr[idx], np.float32)).to(device) for arr in self.arrays]

    def close(self) -> None:
        self.arrays = []
        if self._tmp is not None:
            self._tmp.cleanup()


def _bar(iterable=None, enabled=True, **kw):
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not enabled, dynamic_ncols=True, **kw)


def _extract(engine, dataset, layers, settings: TrainSettings, tick=None) -> tuple[FeatureStore, torch.Tensor]:
    """CLIP features (cached) and masks squashed to the CLIP input size, for every sample in dataset order.
    ``tick(images done)`` is called before each batch (it may raise Cancelled)."""
    S, n = engine.config.image_size, len(dataset)
    store, masks = None, torch.zeros((n, S, S), dtype=torch.bool)
    step = max(1, settings.batch_size)
    with _bar(total=n, enabled=settings.progress, desc="CLIP features", unit="img") as bar:
        for start in range(0, n, step):
            if tick is not None:
                tick(start)
            items = [dataset[i] for i in range(start, min(n, start + step))]
            with torch.no_grad(), engine.autocast():
                x = engine.vision.preprocess([im for im, _, _ in items])
                feats = engine.vision.patch_tokens(x, layers)
            if store is None:
                store = FeatureStore(n, [tuple(f.shape[1:]) for f in feats], settings.cache_bytes,
                                     settings.cache_dir)
            store.put(slice(start, start + len(items)), feats)
            for j, (_, mask, _) in enumerate(items):
                masks[start + j] = torch.from_numpy(squash_mask(mask, S))
            bar.update(len(items))
    return store, masks


def _batches(categories: list[str], batch_size: int, gen: torch.Generator) -> list[list[int]]:
    """One epoch's batches: each category's samples shuffled and cut into batches, then all batches shuffled."""
    by_cat: dict[str, list[int]] = {}
    for i, c in enumerate(categories):
        by_cat.setdefault(c, []).append(i)
    batches = []
    for idx in by_cat.values():
        perm = torch.randperm(len(idx), generator=gen).tolist()
        batches += [[idx[p] for p in perm[s:s + batch_size]] for s in range(0, len(idx), batch_size)]
    order = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[o] for o in order]


def _resume_state(engine, path, settings: TrainSettings, in_dim, dim, log: Log,
                  data: dict | None = None) -> tuple[dict, TrainSettings]:
    ckpt = read_umci(path)
    check_compatible(ckpt, path, clip_model=engine.identity["clip_model"],
                     clip_weights=engine.identity["clip_weights"], in_dim=in_dim, dim=dim)
    if "training_state" not in ckpt:
        raise InvalidInputError(f"UMCI checkpoint {path} holds no training state (optimizer, epoch, random state), so "
                                "training cannot resume from it; train a new one.")
    if int(ckpt["image_size"]) != engine.config.image_size:
        raise InvalidInputError(f"UMCI checkpoint {path} was trained at {ckpt['image_size']} px but the engine uses "
                                f"{engine.config.image_size} px; resume with --image-size {ckpt['image_size']}.")
    if ckpt.get("prompt_set_hash") != engine.config.prompt_set_hash():
        raise InvalidInputError(f"UMCI checkpoint {path} was trained with another prompt set; resume with the same "
                                "prompt lists (config file) it was trained with.")
    trained = ckpt.get("training_data")
    if data is not None and trained is not None and (trained.get("categories"), trained.get("counts")) != (
            data["categories"], data["counts"]):
        raise InvalidInputError(f"UMCI checkpoint {path} was trained on other data ({_data_summary(trained)}) than "
                                f"this run's ({_data_summary(data)}); resume with the same dataset and categories, "
                                "or train a new checkpoint.")
    kept = dict(batch_size=int(ckpt["batch_size"]), lr=float(ckpt["lr"]), betas=tuple(ckpt["betas"]),
                seed=int(ckpt["seed"]), focal_gamma=float(ckpt["focal_gamma"]))
    changed = {k: v for k, v in kept.items() if getattr(settings, k) != v}
    if changed:
        log(f"Resuming with the checkpoint's settings {changed} (exact continuation).")
    return ckpt, TrainSettings(**{**asdict(settings), **kept})


def _on_forked_rng(train):
    """Run ``train(engine, ...)`` on a fork of torch's global RNG (the CPU's, and the engine's GPU's): the run
    seeds and draws from its own state, and the caller's RNG state is the same afterwards as before."""
    @functools.wraps(train)
    def forked(engine, *args, **kwargs):
        with torch.random.fork_rng(devices=[engine.device] if engine.device.type == "cuda" else []):
            return train(engine, *args, **kwargs)

    return forked


@_on_forked_rng
def train_umci(engine, dataset, settings: TrainSettings | None = None, *, out: str | Path | None = None,
               resume: str | Path | None = None, log: Log = print,
               on_epoch: Callable[[int, float], None] | None = None,
               progress: Callable[[str, float], None] | None = None,
               cancelled: Callable[[], bool] | None = None) -> TrainReport:
    """Train a UMCI on ``dataset`` (samples with masks) over the engine's frozen CLIP.

    Args:
        engine: a :class:`~napari_clipsam.engine.clipsam.ClipSAM`; its CLIP, prompt lists, ``image_size`` and
            ``feature_layers``/``umci_heads``/``umci_scale_kernels``/``temperature`` define the UMCI. Its SAM and
            any UMCI it holds are not used.
        dataset: an :class:`~napari_clipsam.data.AnomalyDataset`; each sample's category names its object.
        settings: hyper-parameters (:class:`TrainSettings`).
        out: checkpoint path, rewritten atomically after every epoch (None: keep the result in memory only).
        resume: a checkpoint written by this function; training continues after its last epoch until
            ``settings.epochs`` (its batch size, learning rate, betas and seed are used).
        log: receives one-line messages. on_epoch: called with (epoch, mean loss) after every epoch.
        progress: called with (stage, overall fraction 0..1, never decreasing) as the run goes; the stages are
            ``"features"`` (CLIP on every image, the first 20 %) and ``"epoch N"``.
        cancelled: polled before every batch; when it returns True the run stops with
            :class:`~napari_clipsam.errors.Cancelled` (the checkpoint at ``out`` then holds the last whole epoch).

    The run seeds torch's RNG with ``settings.seed`` on a fork of it: the caller's RNG state is left as it was.
    """
    settings = settings or TrainSettings()
    if len(dataset) == 0:
        raise InvalidInputError(f"The training set {dataset.root} holds no images.")
    cfg, device = engine.config, engine.device
    in_dim, dim = clip_widths(engine)
    ckpt, start_epoch, losses = None, 0, []
    if resume is not None:
        ckpt, settings = _resume_state(engine, resume, settings, in_dim, dim, log, describe_dataset(dataset))
        start_epoch, losses = int(ckpt["training_state"]["epoch"]), list(ckpt.get("epoch_losses", []))
        h = ckpt["hparams"]
        layers, heads, kernels, temperature = tuple(h["layers"]), h["heads"], tuple(h["kernels"]), h["temperature"]
    else:
        layers, heads, kernels = tuple(cfg.feature_layers), cfg.umci_heads, tuple(cfg.umci_scale_kernels)
        temperature = cfg.temperature
    engine.vision.check_layers(layers)
    if settings.batch_size < 1 or settings.epochs < 1 or not settings.lr > 0:
        raise InvalidInputError(f"batch size and epochs must be ≥ 1 and the learning rate > 0; got {settings}.")

    torch.manual_seed(settings.seed)
    umci = UMCI(in_dim, dim, layers, heads, kernels, temperature).to(device)
    optimizer = torch.optim.Adam(umci.parameters(), lr=settings.lr, betas=tuple(settings.betas))
    shuffle = torch.Generator().manual_seed(settings.seed)
    if ckpt is not None:
        state = ckpt["training_state"]
        umci.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        shuffle.set_state(state["shuffle_rng"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
    report = TrainReport(umci, start_epoch, losses, umci.num_parameters(), len(dataset), 0.0, 0.0,
                         resumed_from_epoch=start_epoch,
                         previous_seconds=float(ckpt.get("train_seconds", 0.0)) if ckpt is not None else 0.0)
    if start_epoch >= settings.epochs:
        log(f"The checkpoint already holds {start_epoch} epoch(s) (asked for {settings.epochs}); nothing to do.")
        umci.eval()
        return report

    todo = settings.epochs - start_epoch
    done = [0.0]

    def report_progress(stage: str, fraction: float, check: bool = True) -> None:
        if check and cancelled is not None and cancelled():
            raise Cancelled(f"training cancelled during {stage}")
        done[0] = max(done[0], min(1.0, fraction))
        if progress is not None:
            progress(stage, done[0])

    categories = [s.category for s in dataset.samples]
    texts = {c: engine.text_embeddings(object_name(c)).to(device).float() for c in dict.fromkeys(categories)}
    t0 = time.perf_counter()
    store, masks = _extract(engine, dataset, layers, settings,
                            tick=lambda i: report_progress("features", 0.2 * i / len(dataset)))
    report.feature_seconds = time.perf_counter() - t0
    data = describe_dataset(dataset)
    t0 = time.perf_counter()
    try:
        for epoch in range(start_epoch, settings.epochs):
            umci.train()
            batches = _batches(categories, settings.batch_size, shuffle)
            total, seen = 0.0, 0
            with _bar(batches, enabled=settings.progress, desc=f"epoch {epoch + 1}/{settings.epochs}",
                      unit="batch") as bar:
                for b, idx in enumerate(bar):
                    report_progress(f"epoch {epoch + 1}", 0.2 + 0.8 * (epoch - start_epoch + b / len(batches)) / todo)
                    logits = umci(store.get(idx, device), texts[categories[idx[0]]])
                    loss = umci_loss(logits, masks[idx].to(device), settings.focal_gamma)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total += float(loss.detach()) * len(idx)
                    seen += len(idx)
                    bar.set_postfix(loss=f"{total / seen:.4f}")
            mean = total / max(seen, 1)
            if not math.isfinite(mean):
                raise TrainingDivergedError(f"training diverged at epoch {epoch + 1} (loss {mean}); lower the "
                                            "learning rate.")
            losses.append(mean)
            report.epochs = epoch + 1
            report.train_seconds = time.perf_counter() - t0
            if out is not None:
                report.checkpoint = _save(out, umci, engine, optimizer, shuffle, settings, report, data)
            if on_epoch is not None:
                on_epoch(epoch + 1, mean)
            report_progress(f"epoch {epoch + 1}", 0.2 + 0.8 * (epoch + 1 - start_epoch) / todo, check=False)
    finally:
        store.close()
    umci.eval()
    return report


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries a checkpoint depends on (recorded in it, for provenance)."""
    from importlib.metadata import PackageNotFoundError, version

    from .._version import __version__

    out: dict[str, str | None] = {"napari-clipsam": __version__}
    for name in ("torch", "open_clip_torch", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _save(out, umci, engine, optimizer, shuffle, settings: TrainSettings, report: TrainReport, data) -> Path:
    cfg, device = engine.config, engine.device
    state = {"epoch": report.epochs, "optimizer": optimizer.state_dict(), "shuffle_rng": shuffle.get_state(),
             "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    extra = {
        "feature_layers": list(umci.layers), "clip_identity": dict(engine.identity, umci_weights=None),
        "training_data": data, "epochs": report.epochs, "epoch_losses": list(report.epoch_losses),
        "final_loss": report.final_loss, "seed": settings.seed, "lr": settings.lr, "betas": list(settings.betas),
        "batch_size": settings.batch_size, "focal_gamma": settings.focal_gamma, "umci_parameters": report.parameters,
        "train_seconds": report.previous_seconds + report.feature_seconds + report.train_seconds,
        "device": str(device), "versions": library_versions(),
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "training_state": state,
    }
    return save_umci(out, umci, clip_model=engine.identity["clip_model"], clip_weights=engine.identity["clip_weights"],
                     image_size=cfg.image_size, prompt_set_hash=cfg.prompt_set_hash(), extra=extra)
