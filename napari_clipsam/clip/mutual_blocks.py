"""The float32 nearest-patch distances of folder mutual scoring (:mod:`.mutual`, step 3), every radius from one
similarity product per pair of images, each pair computed once for both directions.

Two exact rewritings of the plain computation (``prepare_tokens`` for each r, then one product per r and per
ordered pair of images), which together do one sixth of its matrix-product work at ``mutual_radii = (1, 3, 5)``:

1. **Radii from one product.** With ``x`` the L2-normalised tokens and ``Σ_r x(p)`` the sum of ``x`` over the r×r
   neighbourhood of p (the cells that exist), ``prepare_tokens(·, r)(p) = Σ_r x(p) / ‖Σ_r x(p)‖`` (the mean's
   count cancels in the normalisation), so the similarity of two neighbourhood-averaged patches is
   ``sim_r(p, q) = (Σ_{p' ∈ N_r(p)} Σ_{q' ∈ N_r(q)} x(p') · x(q')) / (‖Σ_r x(p)‖ ‖Σ_r x(q)‖)``: the r×r box sum,
   over both patch grids, of the r = 1 similarities ``S = x_i x_jᵀ``, divided by two norms computed once per
   image. The box sums are shifted additions over the grid axes (memory-bound, a few passes over ``S``) instead
   of a 1024-deep matrix product per radius.
2. **Both directions from one product.** ``d_ij(p) = 1 − max_q sim(p, q)`` and ``d_ji(q) = 1 − max_p sim(p, q)``
   are the row and the column maxima of the same matrix, so only the pairs of image blocks ``i ≤ j`` are
   multiplied.

The results equal the plain fp32 computation up to float32 rounding of the sums' order (``tests/test_mutual.py``
holds them to 1e-5; measured ≤ 1e-7 on the tiny folders). Memory: the distances ``d[i, j, p]`` of one feature
layer for every radius, ``len(radii) · N² · P`` floats (3 radii, 50 images of 24×24 patches: 17 MiB; 200 images:
276 MiB), plus one product of ``subset × P`` by ``subset × P`` similarities and its box sums.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..errors import Cancelled

#: Similarity written over the patches a ``mutual_window`` leaves out, below any cosine.
_MASKED = -2.0


def box_sum(t: torch.Tensor, r: int, dims: Sequence[int]) -> torch.Tensor:
    """Sum of ``t`` over the r×r… neighbourhood (side ``r``, odd, stride 1) along each of ``dims``; cells outside
    the tensor count as 0 (so at a border only the cells that exist are summed). ``r`` = 1 returns ``t``."""
    k = r // 2
    if k == 0:
        return t
    for d in dims:
        n = t.shape[d]
        kk = min(k, n - 1)
        if kk == 0:
            continue
        out = torch.empty_like(t)  # out[i] = t[i] + t[i − 1], written at once (no copy of t first)
        torch.add(t.narrow(d, 1, n - 1), t.narrow(d, 0, n - 1), out=out.narrow(d, 1, n - 1))
        out.narrow(d, 0, 1).copy_(t.narrow(d, 0, 1))
        out.narrow(d, 0, n - 1).add_(t.narrow(d, 1, n - 1))
        for o in range(2, kk + 1):
            out.narrow(d, o, n - o).add_(t.narrow(d, 0, n - o))
            out.narrow(d, 0, n - o).add_(t.narrow(d, o, n - o))
        t = out
    return t


def layer_distances(tokens: torch.Tensor, radii: Sequence[int], subset_size: int,
                    mask: torch.Tensor | None = None,
                    cancelled: Callable[[], bool] | None = None,
                    also: torch.Tensor | None = None):
    """One layer's (N, C, h, w) raw tokens → ``{r: (N, N, P) d[i, j, p]}``: the nearest distance
    ``min_q (1 − x_r[i, p] · x_r[j, q])`` (q restricted by ``mask`` (P, P) when given) of the
    neighbourhood-averaged tokens ``x_r`` (:func:`~napari_clipsam.clip.mutual.prepare_tokens`), for every r of
    ``radii``. The diagonal ``d[i, i]`` holds the self-distances (0 without a window; callers ignore it).
    ``cancelled`` is checked before each product (raises :class:`~napari_clipsam.errors.Cancelled`).
    ``also`` (P, P): return ``(D, D_also)``, the second with q restricted by ``also`` too, from the same products
    (one more masked copy of each block's similarities and ``len(radii) · N² · P`` more distances)."""
    blocks = LayerBlocks(tokens, radii, mask, also)
    N, s = blocks.N, max(1, int(subset_size))
    for i0 in range(0, N, s):
        for j0 in range(i0, N, s):
            if cancelled is not None and cancelled():
                raise Cancelled("cancelled during mutual scoring")
            blocks.pair(i0, min(N, i0 + s) - i0, j0, min(N, j0 + s) - j0)
    return blocks.D if also is None else (blocks.D, blocks.D_also)


class LayerBlocks:
    """One layer's normalised tokens, neighbourhood norms and distances being filled, block pair by block pair
    (:meth:`pair`; :func:`layer_distances` runs them all, the bench times one of each kind)."""

    def __init__(self, tokens: torch.Tensor, radii: Sequence[int], mask: torch.Tensor | None = None,
                 also: torch.Tensor | None = None):
        N, C, h, w = tokens.shape
        self.N, self.h, self.w, self.radii = N, h, w, [int(r) for r in radii]
        P = h * w
        x = F.normalize(tokens.float(), dim=1)
        self.inv = {r: 1.0 / box_sum(x, r, (2, 3)).norm(dim=1).reshape(N, P) for r in self.radii if r > 1}
        self.X = x.permute(0, 2, 3, 1).reshape(N, P, C).contiguous()
        self.D = {r: torch.empty(N, N, P, dtype=torch.float32, device=tokens.device) for r in self.radii}
        self.keep = None if mask is None else ~mask[None, :, None, :]  # (1, P, 1, P): True where q is left out
        self.keep_also = None if also is None else ~also[None, :, None, :]
        self.D_also = None if also is None else {r: torch.empty_like(d) for r, d in self.D.items()}

    def pair(self, i0: int, si: int, j0: int, sj: int) -> None:
        """Fill ``D[r][I, J]`` and (``j0 != i0``) ``D[r][J, I]`` for the query images ``I = i0 … i0 + si − 1``
        and the images ``J = j0 … j0 + sj − 1``, every radius, from one product."""
        X, h, w, keep, C = self.X, self.h, self.w, self.keep, self.X.shape[2]
        P = h * w
        S = (X[i0:i0 + si].reshape(si * P, C) @ X[j0:j0 + sj].reshape(sj * P, C).T).view(si, h, w, sj, h, w)
        for r in self.radii:
            if r == 1:  # the similarities themselves; S stays as it is for the box sums of the other radii
                B = S.view(si, P, sj, P)  # [i, p, j, q]
                if keep is not None:
                    B = B.masked_fill(keep, _MASKED)
            else:
                B = box_sum(S, r, (1, 2, 4, 5))
                if B is S:  # a 1×1 grid: nothing to sum
                    B = S.clone()
                B = B.view(si, P, sj, P)
                B.mul_(self.inv[r][i0:i0 + si, :, None, None]).mul_(self.inv[r][None, None, j0:j0 + sj])
                if keep is not None:
                    B.masked_fill_(keep, _MASKED)
            self._store(self.D[r], B, i0, si, j0, sj)
            if self.keep_also is not None:  # in place unless B is still S itself (the radii after need it)
                own = r > 1 or keep is not None
                B = B.masked_fill_(self.keep_also, _MASKED) if own else B.masked_fill(self.keep_also, _MASKED)
                self._store(self.D_also[r], B, i0, si, j0, sj)

    @staticmethod
    def _store(D: torch.Tensor, B: torch.Tensor, i0: int, si: int, j0: int, sj: int) -> None:
        """The row and (``j0 != i0``) column maxima of the block similarities ``B[i, p, j, q]`` as distances."""
        D[i0:i0 + si, j0:j0 + sj] = (1.0 - B.amax(dim=3)).clamp_(min=0.0).permute(0, 2, 1)
        if j0 != i0:
            D[j0:j0 + sj, i0:i0 + si] = (1.0 - B.amax(dim=1)).clamp_(min=0.0).permute(1, 0, 2)
