"""Head selection: which self-attention head separates instances, which cross-attention map
to read for a noun.

Self-attention (paper eq. 2): for each head, PCA of the HW x HW map (rows = pixels as samples)
to 3 components, an H x W x 3 image, gray, then S = std + block + gamma * sobel. All heads are
scored at once with batched tensor ops (one randomized PCA for the whole [heads, HW, HW]
stack, no Python loop over heads, no host sync until the final argmax).

Normalisation (why no term dominates): the score is computed on each head's gray image
(PCA of the square-rooted, 2x-subsampled map; see ``pca_gray``) as

- std: the std of the raw gray image (attention units): whether the head has structure at
  all (diffuse heads have tiny principal components);
- block: the std of the block means of the image standardised to unit std (blocks of
  ``block_size`` patches): the share of the contrast at object scale, in [0, 1] (our
  "variance of block sums", made scale-free: the reference code's raw block-sum variance grew
  with the block area and was ~95% of the score);
- sobel: the mean Sobel magnitude (/4, a unit step gives 1) of the standardised image after a
  3x3 box smoothing: edge clarity at object scale;

each divided by its largest value over the heads of the frame, so each lies in [0, 1], and
S = std + block + gamma * sobel (gamma = ``sobel_weight``). Our addition: S is multiplied by (1 - R^2), R^2 being how
well a cubic polynomial of (row, column) fits the standardised image. Positional heads'
principal components are smooth functions of position, they score high on std and block
and won every frame of our synthetic scenes without this factor; instance maps (plateaus on a
flat background) have R^2 near 0.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from ..deprecation import warn_renamed

__all__ = ["pca_gray", "score_terms", "score_self_attention_heads", "select_cross_attention",
           "as_tensor", "attention_rows", "check_probabilities", "check_not_constant", "ROW_SUM_TOLERANCE",
           "ROW_SUM_SAMPLE_ROWS"]

_GRAY = (0.299, 0.587, 0.114)


def _float_on_cpu(x) -> torch.Tensor:
    """``x`` as a float32 (or float64) CPU tensor that does not require grad: an array
    converted, a tensor detached only if it requires grad, copied only if it is on another
    device or of another dtype (a float32 CPU tensor that does not require grad is ``x``
    itself)."""
    t = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x
    if t.requires_grad:  # read, not differentiated
        t = t.detach()
    if t.device.type != "cpu":  # the layout stage runs on the CPU
        t = t.cpu()
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _refuse_nan_inf(t: torch.Tensor, name: str) -> None:
    """``ValueError`` naming how many entries of ``t`` are NaN/inf, when any is."""
    bad = int((~torch.isfinite(t)).sum().item())
    if bad:
        raise ValueError(f"{name} contains {bad} NaN/inf values (shape {tuple(t.shape)}); "
                         "attention maps must be finite: check the dtype/overflow upstream")


def as_tensor(x, name: str) -> torch.Tensor:
    """A float32 (or float64) CPU tensor from a tensor or array; NaN/inf raise ``ValueError``.
    A tensor that requires grad is detached (the layout is read, not differentiated), and one on
    a GPU is copied to the CPU, where the layout stage runs (a CPU tensor is returned as it is)."""
    t = _float_on_cpu(x)
    # one reduction is enough on the fast path: NaN/inf propagate through a sum
    if not bool(torch.isfinite(t.sum())):
        _refuse_nan_inf(t, name)
    return t


#: A self-attention map's rows are read as they are when every row sums to 1 within this;
#: otherwise each row is divided by its sum (``attention_rows``). Half-precision softmax rows
#: sum to 1 within about 2e-3 (each entry rounded to 8 bits), so such maps are left alone.
ROW_SUM_TOLERANCE = 1e-2

#: Rows per head, evenly spaced, searched for negative entries (``check_probabilities``): a
#: map of scores or logits has negative entries nearly everywhere, so a sample finds them
#: without a second pass over the whole map (64 rows of 1560 at 30x52: about 0.2 ms).
SIGN_SAMPLE_ROWS = 64

#: Entries above this negative value count as rounding, not as a negative probability.
NEGATIVE_TOLERANCE = -1e-6


def attention_rows(x, name: str, *, sampled: bool = False) -> torch.Tensor:
    """A self-attention map ``[..., N, N]`` as a float tensor whose rows sum to 1.

    ``x``: tensor or array of attention probabilities (softmax rows). A row need not sum to 1:
    the frame's block of attention over several frames, or the video block of joint attention
    (CogVideoX), keeps part of each row's mass on other tokens. Such rows are divided by their
    sums, which is the attention among the frame's own tokens (what the reader from q/k
    computes); maps whose rows all sum to 1 within ``ROW_SUM_TOLERANCE`` are returned as they
    are (no copy). A map on a GPU is copied to the CPU first (``as_tensor``).

    ``sampled=False``: the row sums are one pass over the whole map, which also finds NaN/inf
    anywhere in it. ``sampled=True`` (for a caller that reads the map only through
    ``attention_entries.MapSelfAttention``, which refuses NaN/inf in every entry it reads):
    the sums of ``ROW_SUM_SAMPLE_ROWS`` evenly spaced rows per head decide; when they all sum
    to 1 the map is returned without reading the rest (a ``[12, 1560, 1560]`` map is 117 MB:
    without the pass the layout took 0.87-0.89x its time at 30x52), otherwise every row is
    summed and divided as above. A NaN/inf entry outside the sampled rows that the layout
    never reads is then not reported.

    Raises ``ValueError`` for NaN/inf entries, for a constant map (``check_not_constant``), for
    rows whose sum is not positive, and for negative entries (``check_probabilities``: scores
    or logits passed instead of the softmax).
    """
    t = _float_on_cpu(x)
    sums = _row_sums(t, name, sampled)
    check_not_constant(t, name)
    check_probabilities(t, name)
    if t.numel() == 0:
        return t
    _refuse_empty_rows(sums, name)
    if sampled and _sum_to_one(sums):
        return t
    if sampled:  # some sampled rows do not sum to 1: every row is read
        sums = _row_sums(t, name, False)
        _refuse_empty_rows(sums, name)
    if not _sum_to_one(sums):
        t = t / sums.unsqueeze(-1)
    return t


#: Rows per head, evenly spaced, whose sums decide whether a map's rows sum to 1 when
#: ``attention_rows`` is asked to sample (64 rows of 1560 at 30x52: 4% of the map).
ROW_SUM_SAMPLE_ROWS = 64


def _row_sums(t: torch.Tensor, name: str, sampled: bool) -> torch.Tensor:
    """The sums of ``t``'s rows (``ROW_SUM_SAMPLE_ROWS`` evenly spaced ones per head when
    ``sampled``), ``[..., rows]``; ``ValueError`` when one is not finite."""
    rows = _sampled_rows(t, ROW_SUM_SAMPLE_ROWS) if sampled else t
    sums = rows.sum(-1)  # NaN/inf propagate
    if not bool(torch.isfinite(sums).all()):
        _refuse_nan_inf(t, name)
        raise ValueError(f"{name}: some rows sum to more than the float range (shape "
                         f"{tuple(t.shape)}); expected attention probabilities, each row a softmax")
    return sums


def _refuse_empty_rows(sums: torch.Tensor, name: str) -> None:
    """``ValueError`` when a row sum in ``sums`` is not positive."""
    lowest = float(sums.amin())
    if lowest <= 0.0:
        n_bad = int((sums <= 0).sum().item())
        raise ValueError(f"{name}: {n_bad} rows sum to {lowest:.4g} or less; expected attention "
                         "probabilities, every row a softmax with a positive sum. A row with "
                         "no mass on the frame's keys carries no layout: read another frame or layer")


def _sum_to_one(sums: torch.Tensor) -> bool:
    """Whether every row sum in ``sums`` is within ``ROW_SUM_TOLERANCE`` of 1."""
    return sums.numel() == 0 or max(abs(float(sums.amin()) - 1.0),
                                    abs(float(sums.amax()) - 1.0)) <= ROW_SUM_TOLERANCE


def _sampled_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """About ``rows`` evenly spaced rows of each ``[N, N]`` map of ``t`` (a view; all of
    them when ``t`` has no more)."""
    if t.dim() >= 2 and t.shape[-2] > rows:
        return t[..., ::max(1, t.shape[-2] // rows), :]
    return t


def check_probabilities(t: torch.Tensor, name: str) -> None:
    """``ValueError`` when ``t`` (attention maps, last dimension the keys or the patches) has
    negative entries, searched in ``SIGN_SAMPLE_ROWS`` evenly spaced rows per head of a
    ``[..., N, N]`` map and everywhere in a smaller one."""
    if t.numel() == 0:
        return
    low = float(_sampled_rows(t, SIGN_SAMPLE_ROWS).amin())
    if low < NEGATIVE_TOLERANCE:
        raise ValueError(f"{name} has negative entries (as low as {low:.4g}); expected attention "
                         "probabilities (softmax rows, every entry >= 0). Pass "
                         "torch.softmax(scores, -1), not the scores or logits")


def check_not_constant(x: torch.Tensor, name: str) -> None:
    """``ValueError`` when every entry of ``x`` is the same value: such a map carries no
    layout (attention captured wrongly, or a grid of one patch)."""
    flat = x.reshape(-1)
    if flat.numel() == 0 or not bool((flat[:4096] == flat[0]).all()):
        return  # the common case, decided on the first entries without reading the map
    if bool((flat == flat[0]).all()):
        raise ValueError(
            f"{name} is constant (every one of its {flat.numel()} entries is "
            f"{float(flat[0]):.6g}): it holds no layout to read. Check that the "
            "attention was captured at the right step, layer and token columns, and that "
            "the grid has more than one patch")


def _check_grid(n: int, grid: tuple[int, int], name: str) -> tuple[int, int]:
    H, W = (int(g) for g in grid)
    if H < 1 or W < 1:
        raise ValueError(f"{name}: grid={tuple(grid)!r}: expected (H, W), two ints >= 1 (patches of one frame)")
    if H * W != n:
        hint = "pass grid=(H, W) in patches of one frame"
        if n > H * W and n % (H * W) == 0:  # the video's tokens, several frames of this grid
            hw = H * W
            hint = (f"the map holds {n // hw} frames of this grid: pass one frame's tokens, "
                    f"f * {hw}:(f + 1) * {hw} (of a self-attention map, the block "
                    f"[:, f * {hw}:(f + 1) * {hw}, f * {hw}:(f + 1) * {hw}], whose rows are "
                    "renormalised over the frame's keys; of a cross-attention map, those columns)")
        raise ValueError(f"{name}: grid={tuple(grid)!r} has {H * W} patches but the map has "
                         f"{n} tokens per frame; {hint}")
    return H, W


#: ``check_grid_orientation``: the rows sampled, the smallest frame it reads, and how much
#: more a row must keep on the token ``H`` ahead than on the token ``W`` ahead before the grid
#: is called transposed (the right grid, on 1,056 frames of the eleven synthetic families at
#: both benchmark grids and noise 0.25-1.0: 0.79-67x the other way round, under 1 only on the
#: multi family's noisiest frames; every transposed grid refused on nine families, 72 and 89
#: of 96 on the multi and joint families)
ORIENTATION_ROWS = 256
ORIENTATION_MIN_TOKENS = 64
ORIENTATION_RATIO = 2.0


def check_grid_orientation(self_attn, grid: tuple[int, int], name: str) -> None:
    """Refuse a grid given as (W, H): ``ValueError`` naming ``name`` when the rows of
    ``self_attn`` (``[heads, HW, HW]``, raster order: token ``y * W + x``) keep on average
    ``ORIENTATION_RATIO`` times more attention on the token ``H`` ahead than on the token ``W``
    ahead. With the right grid the token ``W`` ahead is the patch below, a neighbour, which
    every map with a positional part (rotary embeddings) favours; with the grid transposed
    it is a patch far along the same row, and the patch below lies ``H`` ahead. Skipped for
    square grids, single rows or columns, frames under ``ORIENTATION_MIN_TOKENS`` tokens,
    and maps that favour neither (no positional part): a grid is refused only on clear
    evidence."""
    H, W = (int(g) for g in grid)
    n = H * W
    if H == W or min(H, W) < 2 or n < ORIENTATION_MIN_TOKENS or self_attn.shape[-1] != n:
        return
    rows = torch.linspace(0, n - 1 - max(H, W), ORIENTATION_ROWS).round().long().to(self_attn.device)
    below = float(self_attn[:, rows, rows + W].float().mean())  # the patch below, if (H, W) is right
    across = float(self_attn[:, rows, rows + H].float().mean())  # the patch below, if it is (W, H)
    if across > ORIENTATION_RATIO * below:
        raise ValueError(f"{name}: grid={tuple(grid)!r} looks transposed: the self-attention's rows keep "
                         f"{across / max(below, 1e-30):.1f}x more on the token {H} ahead than on the token {W} "
                         f"ahead, so the patch below each token lies {H} tokens on (rows of {H} patches). "
                         f"Pass grid=(H, W) = ({W}, {H}) for tokens in raster order (row by row), or "
                         "reorder the tokens if the model flattens the frame column by column")


def pca_gray(self_attn: torch.Tensor, grid: tuple[int, int], stride: int = 2,
             n_components: int = 3, oversample: int = 5, power_iters: int = 2,
             seed: int = 0) -> torch.Tensor:
    """PCA(3) of each head's map, rows as samples, as a gray image ``[heads, H', W']``.

    ``self_attn``: ``[heads, HW, HW]``. Queries and keys are subsampled by ``stride`` along
    both grid axes first (H' = ceil(H / stride)): the maps are smooth at that scale, and it
    cuts the memory read (the cost floor at 1560 tokens x 12 heads) by 4x to 8x. ``stride=1``
    is the exact paper procedure. The PCA is a randomized range finder with
    ``power_iters`` power iterations, batched over heads. Component signs are fixed so that
    each component's largest-magnitude score is positive. Gray is
    ``0.299 c1 + 0.587 c2 + 0.114 c3`` of the raw scores (units of attention).
    """
    h, n, n2 = self_attn.shape
    H, W = _check_grid(n, grid, "pca_gray")
    if n2 != n:
        raise ValueError(f"self_attn must be [heads, HW, HW], got {tuple(self_attn.shape)}")
    x = self_attn
    if stride > 1:
        x = x.reshape(h, H, W, H, W)[:, ::stride, ::stride, ::stride, ::stride]
    Hs, Ws = x.shape[1], x.shape[2]
    # Hellinger (square-root) transform: a few heavy-tailed entries (noise spikes, sinks)
    # would otherwise own the principal components.
    x = x.reshape(h, Hs * Ws, -1).clamp_min(0).sqrt()
    x = x - x.mean(dim=1, keepdim=True)  # centre each feature (key) over the samples
    xt = x.transpose(1, 2).contiguous()  # both products below then read memory row-wise
    m, f = x.shape[1], x.shape[2]
    k = min(n_components + oversample, f, m)
    gen = torch.Generator().manual_seed(seed)
    omega = torch.randn(k, f, generator=gen, dtype=x.dtype)
    q = torch.linalg.qr((omega @ xt).transpose(1, 2)).Q  # [h, m, k]: range of the map
    for _ in range(power_iters):
        z = torch.linalg.qr((q.transpose(1, 2) @ x).transpose(1, 2)).Q  # [h, f, k]
        q = torch.linalg.qr((z.transpose(1, 2) @ xt).transpose(1, 2)).Q  # [h, m, k]
    b = q.transpose(1, 2) @ x  # [h, k, f]
    evals, evecs = torch.linalg.eigh(b @ b.transpose(1, 2))  # ascending
    c = min(n_components, k)
    ub = evecs.flip(-1)[:, :, :c]
    s = evals.flip(-1)[:, :c].clamp_min(0).sqrt()
    scores = (q @ ub) * s[:, None, :]  # [h, m, c] principal component scores
    idx = scores.abs().argmax(dim=1, keepdim=True)
    sign = torch.sign(torch.gather(scores, 1, idx))
    scores = scores * torch.where(sign == 0, torch.ones_like(sign), sign)
    weights = torch.tensor(_GRAY[:c], dtype=scores.dtype)
    return (scores @ weights).reshape(h, Hs, Ws)


def _sobel_magnitude(img: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of ``[heads, H, W]`` images, replicate padding, / 4 so that a
    unit step edge gives 1."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=img.dtype)
    kernel = torch.stack([kx, kx.T])[:, None]  # [2, 1, 3, 3]
    padded = F.pad(img[:, None], (1, 1, 1, 1), mode="replicate")
    g = F.conv2d(padded, kernel)  # [heads, 2, H, W]
    return g.square().sum(1).sqrt() / 4.0


def score_terms(gray: torch.Tensor, block_size: int = 3) -> dict[str, torch.Tensor]:
    """The three separability terms of each head's gray image ``[heads, H, W]``.

    - ``std``: std over pixels of the raw gray image (attention units).
    - ``block``: std of the block means (blocks of ``block_size`` patches) of the image
      standardised to unit std: the share of the contrast at the scale of objects rather
      than of single patches, in [0, 1].
    - ``sobel``: mean Sobel magnitude of the block-smoothed standardised image: edge
      clarity at object scale, in [0, 1] for a standardised image (a unit step edge gives 1
      along the edge).
    Raw terms; ``score_self_attention_heads`` normalises them across heads.
    """
    h, H, W = gray.shape
    flat = gray.reshape(h, -1)
    std = flat.std(dim=1, unbiased=False)
    z = (gray - flat.mean(1)[:, None, None]) / std.clamp_min(1e-12)[:, None, None]
    b = max(1, min(block_size, H, W))
    block = F.avg_pool2d(z[:, None], b, stride=b).reshape(h, -1).std(dim=1, unbiased=False)
    smooth = F.avg_pool2d(F.pad(z[:, None], (1, 1, 1, 1), mode="replicate"), 3, stride=1)[:, 0]
    sobel = _sobel_magnitude(smooth).reshape(h, -1).mean(1)
    zero = std <= 1e-12
    # positional: R^2 of a cubic polynomial in (y, x) fitted to the standardised image.
    # Positional heads' principal components are smooth functions of position (R^2 ~ 1);
    # instance maps are plateaus on a flat background (R^2 ~ 0).
    design = _poly_design(H, W, gray.dtype)  # [HW, 10]
    if H * W >= 2 * design.shape[1]:
        coef = torch.linalg.lstsq(design, z.reshape(h, -1).T).solution  # [10, h]
        resid = z.reshape(h, -1) - (design @ coef).T
        r2 = 1.0 - resid.square().mean(1)  # z has unit variance
    else:
        # too few pixels to tell a smooth positional pattern from content (an
        # underdetermined fit is meaningless, and LAPACK's answer to it is not stable)
        r2 = torch.zeros(h, dtype=gray.dtype)
    return {"std": std, "block": torch.where(zero, 0.0, block),
            "sobel": torch.where(zero, 0.0, sobel),
            "positional": torch.where(zero, 1.0, r2.clamp(0.0, 1.0))}


def _poly_design(H: int, W: int, dtype: torch.dtype) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(-1, 1, H, dtype=dtype),
                          torch.linspace(-1, 1, W, dtype=dtype), indexing="ij")
    y, x = y.reshape(-1), x.reshape(-1)
    cols = [y ** i * x ** j for i in range(4) for j in range(4 - i)]
    return torch.stack(cols, 1)


def score_self_attention_heads(self_attn, grid: tuple[int, int], sobel_weight: float = 1.0,
                               block_size: int = 3, stride: int = 2, *,
                               gamma: float | None = None) -> torch.Tensor:
    """Instance-separability score of every head of one frame, ``[heads]`` (higher = better).

    ``self_attn``: ``[heads, HW, HW]`` (tensor or array, rows sum to 1) of one frame.
    S = std/max_h(std) + block/max_h(block) + sobel_weight * sobel/max_h(sobel) (the paper's
    gamma): each term is divided by its largest value over the heads, so each lies in [0, 1]
    and none dominates by construction. ``argmax`` of the result is the paper's h*_s.
    ``gamma=`` is the deprecated name of ``sobel_weight``.
    """
    if gamma is not None:
        warn_renamed("score_self_attention_heads", "gamma", "sobel_weight")
        sobel_weight = gamma
    x = as_tensor(self_attn, "self_attn")
    if x.ndim != 3:
        raise ValueError(f"self_attn must be [heads, HW, HW], got shape {tuple(x.shape)}")
    terms = score_terms(pca_gray(x, grid, stride=stride), block_size)
    total = torch.zeros_like(terms["std"])
    for name, weight in (("std", 1.0), ("block", 1.0), ("sobel", sobel_weight)):
        t = terms[name]
        total = total + weight * t / t.max().clamp_min(1e-12)
    return total * (1.0 - terms["positional"])


def select_cross_attention(cross_attn, mode: Literal["max", "mean"] = "max"
                           ) -> tuple[torch.Tensor, int]:
    """The cross-attention map to read for one noun in one frame.

    ``cross_attn``: ``[heads, HW]`` or ``[heads, H, W]`` (already summed over the noun's token
    columns). ``mode="max"``: the head with the highest peak (paper); ``"mean"``: the mean over
    heads (reference code). Returns (map flattened to ``[HW]``, head index or -1 for mean).
    """
    x = as_tensor(cross_attn, "cross_attn")
    if x.ndim == 3:
        x = x.reshape(x.shape[0], -1)
    if x.ndim != 2:
        raise ValueError(f"cross_attn must be [heads, HW] or [heads, H, W], got {tuple(x.shape)}")
    if mode == "mean":
        return x.mean(0), -1
    if mode != "max":
        raise ValueError(f"mode={mode!r}: expected 'max' or 'mean'")
    head = int(x.amax(dim=1).argmax())
    return x[head], head
