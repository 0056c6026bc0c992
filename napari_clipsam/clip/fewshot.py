"""Few-shot anomaly map from a handful of normal reference images (beyond the paper; issue 11).

The references' CLIP patch tokens at the configured layers form a memory bank per layer (PatchCore, WinCLIP+,
APRIL-GAN few-shot, AnomalyDINO). A test patch's few-shot score is its cosine distance to the nearest
reference patch, per layer, turned into a probability-like value and averaged over layers. Shapes: ``B``
images, vision width ``C``, patch grid ``h × w``, ``M`` patches in a layer's bank.

Choices (each measured on the synthetic categories with the tiny random CLIP, see docs/method.md):

- **Normalisation**: before the cosine, every channel is standardised with the bank's own mean and standard
  deviation (z-score). Raw ViT tokens share a large common component, so plain cosine similarities all sit
  near 1; standardising lets position and local content decide (``part`` 0.91 → 0.96 pixel AUROC).
- **Augmentation** (``fewshot_augment``): each reference also enters the bank flipped up–down, flipped
  left–right and rotated by 90°, 180° and 270° (6 views), so a handful of images covers more poses.
  Turn it off for parts whose orientation itself can be a defect.
- **Neighbourhood** (``fewshot_neighbourhood``): optional PatchCore-style local aggregation, a stride-1 mean of
  each token over an n×n window before the search (1 = off, the default: on a 16×16 grid it blurs small
  defects away).
- **Coreset** (``fewshot_bank_size``): above this many patches per layer the bank is reduced by greedy
  k-centre selection on a random projection (PatchCore), which keeps the bank's coverage while bounding memory
  (M × C × 4 bytes per layer) and the search time.
- **Calibration**: distances become ``p = 1 - 2^(-d / scale)`` (0 at d = 0, 0.5 at d = scale, → 1), where
  ``scale`` is the :data:`CALIBRATION_QUANTILE` quantile of the distances of reference patches to the bank
  without their own view. The map is monotone in the distance (so AUROC is the distance's) and lives in the
  rough map's [0, 1] range, where a patch as far from the references as the references are from one another
  sits at 0.5 = τ_prompt. When the views come from several sources (``groups`` in :meth:`NormalBank.build`:
  the tiled bank's tiles, grouped by their reference image), a patch is compared only with the other sources:
  overlapping tiles of one image hold near-copies of a patch, so leaving out only its own tile measured the scale
  far too small (2048² metal, 3 references: 0.27 instead of 0.34; a normal image then got 5 objects).
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError

#: The augmented views of one reference image when ``fewshot_augment`` is on (identity first).
AUGMENTATIONS = ("identity", "flip_rows", "flip_cols", "rot90", "rot180", "rot270")
#: Quantile of the references' leave-own-view-out nearest-neighbour distances that maps to 0.5.
CALIBRATION_QUANTILE = 0.99
#: At most this many reference patches per layer are used to measure the calibration distances.
CALIBRATION_SAMPLE = 1024
#: Dimension of the random projection used by the greedy coreset (PatchCore uses 128; 32 measured as good here
#: and 4× cheaper per step).
CORESET_PROJECTION = 32
_CHUNK = 4096  # test patches per similarity matrix (bounds memory to _CHUNK × M floats)
FORMAT_VERSION = 1


def augmented_views(rgb: np.ndarray, augment: bool) -> list[np.ndarray]:
    """The views of one H×W×3 uint8 image that enter the bank: itself, and with ``augment`` also its flips
    (rows, columns) and 90°/180°/270° rotations (:data:`AUGMENTATIONS`, in that order)."""
    if not augment:
        return [rgb]
    views = [rgb, rgb[::-1], rgb[:, ::-1], np.rot90(rgb, 1), np.rot90(rgb, 2), np.rot90(rgb, 3)]
    return [np.ascontiguousarray(v) for v in views]


def neighbourhood_mean(tokens: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, h, w) → (B, C, h, w): each token averaged over its ``size × size`` neighbourhood (stride 1, the
    image border averages only what lies inside). ``size`` 1 returns the tokens unchanged."""
    if size <= 1:
        return tokens
    if size % 2 == 0:
        raise ConfigError(f"fewshot_neighbourhood must be odd (a centred window), got {size}.")
    return F.avg_pool2d(tokens, size, stride=1, padding=size // 2, count_include_pad=False)


def greedy_coreset(x: torch.Tensor, size: int, seed: int = 0) -> torch.Tensor:
    """Indices (size,) of a greedy k-centre coreset of the rows of ``x`` (N, C): each step adds the row
    farthest from those chosen so far, measured on a seeded Gaussian projection to
    :data:`CORESET_PROJECTION` dimensions. Deterministic; returns ``arange(N)`` when ``size >= N``."""
    n = x.shape[0]
    if size >= n:
        return torch.arange(n)
    if size < 1:
        raise ValueError(f"coreset size must be at least 1, got {size}.")
    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(x.shape[1], min(CORESET_PROJECTION, x.shape[1]), generator=g) / CORESET_PROJECTION ** 0.5
    z = x.float().cpu() @ proj
    sq = (z * z).sum(1)
    chosen = torch.empty(size, dtype=torch.long)
    chosen[0] = int(torch.randint(n, (1,), generator=g))
    dist = sq - 2.0 * (z @ z[chosen[0]]) + sq[chosen[0]]  # squared distances to the chosen set
    new = torch.empty_like(dist)
    for i in range(1, size):
        j = int(torch.argmax(dist))
        chosen[i] = j
        torch.mv(z, z[j], out=new)
        new.mul_(-2.0).add_(sq).add_(sq[j])
        torch.minimum(dist, new, out=dist)
    return chosen


def _flatten(tokens: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) → (B·h·w, C)."""
    return tokens.permute(0, 2, 3, 1).reshape(-1, tokens.shape[1])


def _nearest_distance(queries: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """Cosine distance (N,) of each L2-normalised query row to its nearest L2-normalised bank row, chunked."""
    out = torch.empty(queries.shape[0], device=queries.device)
    for s in range(0, queries.shape[0], _CHUNK):
        out[s:s + _CHUNK] = 1.0 - (queries[s:s + _CHUNK] @ bank.T).max(dim=1).values
    return out.clamp_(min=0.0)


@dataclass
class LayerBank:
    """One layer's memory: ``patches`` (M, C) standardised and L2-normalised, the standardisation ``mean`` and
    ``std`` (C,), and the calibration ``scale`` (the distance that maps to 0.5)."""

    layer: int
    patches: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    scale: float

    def embed(self, flat: torch.Tensor) -> torch.Tensor:
        """Raw (N, C) tokens → standardised, L2-normalised (N, C)."""
        return F.normalize((flat.float() - self.mean) / self.std, dim=1)


class NormalBank:
    """The memory banks of a set of normal references, one :class:`LayerBank` per feature layer.

    Build it with :meth:`build` from the references' tokens; :meth:`anomaly_map` scores new images.
    ``reference_keys`` are the references' content hashes (:func:`~napari_clipsam.io.images.image_key`).
    """

    def __init__(self, banks: list[LayerBank], reference_keys: list[str], neighbourhood: int, views: int):
        self.banks, self.reference_keys = banks, list(reference_keys)
        self.neighbourhood, self.views = int(neighbourhood), int(views)

    def to(self, device) -> NormalBank:
        """This bank with every tensor on ``device`` (the engine's), so scoring moves no bank memory."""
        banks = [LayerBank(b.layer, b.patches.to(device), b.mean.to(device), b.std.to(device), b.scale)
                 for b in self.banks]
        return NormalBank(banks, self.reference_keys, self.neighbourhood, self.views)

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(b.layer for b in self.banks)

    @property
    def patches_per_layer(self) -> int:
        return int(self.banks[0].patches.shape[0])

    @property
    def nbytes(self) -> int:
        return sum(b.patches.numel() * b.patches.element_size() for b in self.banks)

    @classmethod
    def build(cls, tokens: list[torch.Tensor], layers: tuple[int, ...], reference_keys: list[str], *,
              bank_size: int, neighbourhood: int = 1, seed: int = 0, groups=None) -> NormalBank:
        """Memory banks from the reference views' tokens.

        Args:
            tokens: one (V, C, h, w) tensor per layer, the V augmented views of all references. Calibration
                leaves out a patch's own view (with one view in all, the patch's own 3×3 neighbourhood instead).
            layers: the 1-based block number of each entry of ``tokens``.
            bank_size: patches kept per layer (greedy coreset above it).
            neighbourhood: local aggregation window (1 = off).
            groups: optional source number of each of the V views (the reference image a tile was cut from);
                with two sources or more, calibration leaves out a patch's whole source, not only its view.
        """
        if len(tokens) != len(layers) or not tokens:
            raise ValueError(f"got tokens for {len(tokens)} layers but {len(layers)} layer numbers.")
        drafts, embs = [], []
        for layer, t in zip(layers, tokens):
            flat = _flatten(neighbourhood_mean(t.float().cpu(), neighbourhood))  # built on the CPU
            draft = LayerBank(int(layer), flat, flat.mean(0), flat.std(0).clamp_min(1e-6), 1.0)
            drafts.append(draft)
            embs.append(draft.embed(flat))
        # one coreset for all layers (the same patches are kept in each), chosen on their joint features
        keep = greedy_coreset(torch.cat(embs, dim=1) / len(embs) ** 0.5, bank_size, seed)
        V, _, h, w = tokens[0].shape
        if groups is not None and len(groups) != V:
            raise ValueError(f"got {len(groups)} source numbers for {V} reference views.")
        view_group = torch.as_tensor(list(groups) if groups is not None else range(V), dtype=torch.long)
        if len(set(view_group.tolist())) < 2:
            view_group = torch.arange(V)  # one source: leaving it out leaves nothing, so leave out the view
        view_of = view_group.repeat_interleave(h * w)
        pos = torch.arange(h * w).repeat(V)
        banks = []
        for draft, emb in zip(drafts, embs):
            scale = _calibration_scale(emb, keep, view_of, pos, w, seed)
            banks.append(LayerBank(draft.layer, emb[keep].contiguous(), draft.mean, draft.std, scale))
        return cls(banks, reference_keys, neighbourhood, tokens[0].shape[0])

    def distances(self, tokens: list[torch.Tensor]) -> list[torch.Tensor]:
        """Nearest-reference cosine distances, one (B, h, w) tensor per layer, from (B, C, h, w) tokens of the
        same layers as the bank (in the same order)."""
        if len(tokens) != len(self.banks):
            raise ValueError(f"the bank holds {len(self.banks)} layers {self.layers}, got {len(tokens)} tensors.")
        out = []
        for bank, t in zip(self.banks, tokens):
            t = neighbourhood_mean(t.float(), self.neighbourhood)
            B, C, h, w = t.shape
            if C != bank.patches.shape[1]:
                raise ValueError(f"layer {bank.layer}: tokens have {C} channels, the bank {bank.patches.shape[1]}; "
                                 "the references were encoded by another CLIP: set them again.")
            queries = bank.embed(_flatten(t.to(bank.patches.device)))
            out.append(_nearest_distance(queries, bank.patches).view(B, h, w))
        return out

    def anomaly_map(self, tokens: list[torch.Tensor], size: int) -> torch.Tensor:
        """Few-shot map (B, size, size) in [0, 1]: per layer ``1 - 2^(-d / scale)``, bilinearly upsampled to
        ``size`` (the CLIP input size), averaged over layers."""
        maps = []
        for bank, d in zip(self.banks, self.distances(tokens)):
            p = 1.0 - torch.exp2(-d / bank.scale)
            maps.append(F.interpolate(p[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0])
        return torch.stack(maps).mean(0).clamp_(0.0, 1.0)

    # ------------------------------------------------------------------ serialisation (disk cache)
    def to_bytes(self) -> bytes:
        """The bank as the bytes of an ``.npz`` file (float32 arrays, exact)."""
        arrays = {"meta": np.frombuffer(repr(dict(version=FORMAT_VERSION, keys=self.reference_keys,
                                                  neighbourhood=self.neighbourhood, views=self.views,
                                                  layers=list(self.layers),
                                                  scales=[b.scale for b in self.banks])).encode(), np.uint8)}
        for i, b in enumerate(self.banks):
            arrays[f"patches{i}"] = b.patches.cpu().numpy()
            arrays[f"mean{i}"] = b.mean.cpu().numpy()
            arrays[f"std{i}"] = b.std.cpu().numpy()
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> NormalBank:
        """Inverse of :meth:`to_bytes`; raises ValueError on a file of another format version."""
        import ast

        with np.load(io.BytesIO(data)) as z:
            meta = ast.literal_eval(z["meta"].tobytes().decode())
            if meta.get("version") != FORMAT_VERSION:
                raise ValueError(f"reference bank format {meta.get('version')} is not {FORMAT_VERSION}")
            banks = [LayerBank(int(layer), torch.from_numpy(z[f"patches{i}"].copy()),
                               torch.from_numpy(z[f"mean{i}"].copy()), torch.from_numpy(z[f"std{i}"].copy()),
                               float(scale)) for i, (layer, scale) in enumerate(zip(meta["layers"], meta["scales"]))]
        return cls(banks, meta["keys"], meta["neighbourhood"], meta["views"])


def _calibration_scale(emb: torch.Tensor, keep: torch.Tensor, view_of: torch.Tensor, pos: torch.Tensor,
                       w: int, seed: int) -> float:
    """The :data:`CALIBRATION_QUANTILE` quantile of nearest-neighbour distances from a seeded sample of
    reference patches to the kept bank, leaving out each patch's own view or source (``view_of`` numbers the
    source of every patch; with a single one, the patch's own 3×3 neighbourhood is left out instead)."""
    n = emb.shape[0]
    g = torch.Generator().manual_seed(seed + 1)
    sample = torch.randperm(n, generator=g)[:CALIBRATION_SAMPLE]
    sims = emb[sample] @ emb[keep].T
    single_view = bool((view_of == view_of[0]).all())
    if single_view:
        dr = (pos[sample, None] // w - pos[None, keep] // w).abs()
        dc = (pos[sample, None] % w - pos[None, keep] % w).abs()
        excluded = (dr <= 1) & (dc <= 1)
    else:
        excluded = view_of[sample, None] == view_of[None, keep]
    sims = sims.masked_fill(excluded, -2.0)
    d = (1.0 - sims.max(dim=1).values).clamp_(min=0.0)
    d = d[sims.max(dim=1).values > -2.0]  # a patch with nothing left to compare with says nothing
    if d.numel() == 0:
        return 1.0
    return max(float(torch.quantile(d, CALIBRATION_QUANTILE)), 1e-6)


# ---------------------------------------------------------------------- settings
def check_settings(config) -> None:
    """Raise ValueError naming the few-shot field of ``config`` that is out of range and what is allowed."""
    if not 0.0 <= config.fewshot_weight <= 1.0:
        raise ConfigError(f"fewshot_weight must lie in [0, 1] (1 = few-shot map only), got {config.fewshot_weight}.")
    if int(config.fewshot_bank_size) < 1:
        raise ConfigError(f"fewshot_bank_size must be at least 1 patch per layer, got {config.fewshot_bank_size}.")
    n = int(config.fewshot_neighbourhood)
    if n < 1 or n % 2 == 0:
        raise ConfigError(f"fewshot_neighbourhood must be an odd window side ≥ 1 (1 = off), got {n}.")
