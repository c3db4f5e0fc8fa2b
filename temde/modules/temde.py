"""T-EMDE: a trainable, differentiable EMDE sketch that pools a token set into a global histogram.

What follows from where (the paper body is not available to this project, see ``docs/temde.md``):

* **Paper (abstract, arXiv 2105.04242):** T-EMDE is a trainable, end-to-end differentiable version of EMDE;
  its cost is linear in the number of tokens; it is a drop-in replacement for the self-attention pooling of a
  cross-modal model; each global text/image representation is a *standardized sketch histogram* over the
  same manifold structure whatever the modality.
* **EMDE (as released by its authors):** DLSH partitioning with random hyperplanes whose biases are data
  quantiles (median or random quantile); ``depth`` independent partitionings of ``hyperplanes`` bits each,
  so ``W = 2**hyperplanes`` buckets per depth; the bucket index is the bits read as an integer; a set's sketch
  is the sum of its members' one-hot bucket vectors; L2 (input) or L1 (histogram) per-depth normalization.
* **This project's reconstruction:** the soft bucket assignment (bit probabilities ``sigmoid((x.r - b)/tau)``
  multiplied over the bits, in log space, with a fixed 0/1 code matrix), the masked *mean* over tokens,
  L2-per-depth-then-``1/sqrt(depth)`` output normalization, the data-dependent hyperplane scale
  (``init_scale``), the ``softmax`` assignment variant and all defaults (depth 8, 7 bits, tau 1, median bias).

The soft assignment of a token with projections ``z_k = (x.r_k - b_k) / tau`` to bucket ``c`` (bits ``c_k``)
is ``P(c) = prod_k sigmoid(z_k)^c_k * sigmoid(-z_k)^(1-c_k)``. Rows sum to one for any ``z`` and, as
``tau -> 0``, ``P`` becomes the hard EMDE one-hot code of the same hyperplanes. In log space it is a small
matmul per token: ``log P = [logsig(z), logsig(-z)] @ [C, 1-C]^T`` with ``C`` the (W, K) 0/1 code matrix.
The product factorizes over the first and last bits, ``P(c) = P_hi(c_hi) * P_lo(c_lo)`` (W = 16 x 8 for
K = 7), so the set histogram ``sum_t w_t P_t = sum_t w_t P_hi[t] (x) P_lo[t]`` is one batched
(16 x T) @ (T x 8) matmul per (item, depth): no (B, T, depth, W) tensor is built, 24 exps per token-depth.

Cost per token: ``depth*K*D`` (one fused projection for all depths) + ``depth*(2K*(2**hi + 2**lo) + W)``,
i.e. linear in the number of tokens; SGRAF's self-attention pooling is ``~D^2`` per token (about 16x more
multiply-adds at D = 1024, depth 8, K = 7).

Scale (docs/temde.md, "Data-dependent scale"): with L2-normalized inputs and unit-variance hyperplanes the
projections are ~N(0, 1) around the median, so ``sigmoid`` stays near 0.5 and every token spreads over
almost all buckets. Our choice: when the biases are initialized from the first batch (DLSH "standardize"),
each hyperplane is also rescaled so that its centred projections have standard deviation ``init_scale``
(default 3.0); ``tau = 1`` then gives typical ``|z|`` of 2-3 units: sharp yet differentiable. The
rescaling changes no hard bucket, so the static (``trainable=False``) sketch is exactly DLSH-EMDE. With
trainable hyperplanes their norm keeps acting as ``1 / tau``.

Initialization happens on the first forward call (train or eval), or explicitly with
:meth:`TEMDE.init_from_data`; the ``bias_initialized`` buffer is saved, so a loaded model never
re-initializes. With ``shared`` sketchers, calling ``init_from_data`` on the concatenated image and text
tokens of one batch puts both modalities' data into the medians (otherwise the first modality seen sets them).
Under data parallelism each replica initializes on its own shard unless the state is broadcast afterwards.

Only depends on torch: this file can be copied out of the repository as is.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["TEMDE"]

BIAS_INITS = ("median", "random", "zero")
NORMALIZATIONS = ("l2", "l1", "none")
ASSIGNMENTS = ("bits", "softmax")
# Clamp on the number of valid tokens, so an empty set gives an all-zero sketch instead of NaN.
_MIN_COUNT = 1.0


def code_matrix(bits: int) -> Tensor:
    """(2**bits, bits) 0/1 float matrix; row ``c`` holds the bits of ``c``, first hyperplane most significant."""
    index = torch.arange(2**bits)
    shifts = torch.arange(bits - 1, -1, -1)
    return ((index[:, None] >> shifts[None, :]) & 1).to(torch.float32)


class TEMDE(nn.Module):
    """Trainable EMDE sketch of a masked token set: ``(B, T, D), (B, T) bool -> (B, depth, 2**hyperplanes)``.

    Args:
        dim: token feature size D.
        depth: number of independent partitionings N (sketch rows).
        hyperplanes: bits per partitioning K; each row has ``W = 2**K`` buckets.
        tau: temperature of the bit sigmoids (``z = (x.r - b) / tau``); ``tau -> 0`` is hard EMDE.
        learn_tau: learn ``log(tau)`` as a parameter.
        trainable: learn hyperplanes and biases; ``False`` is static EMDE (random hyperplanes, data-quantile
            biases), the ablation baseline. They are then buffers: saved, moved, never optimized.
        bias_init: ``"median"`` (later EMDE releases), ``"random"`` (a uniform random quantile per hyperplane,
            the original EMDE release) of the first batch's projections, or ``"zero"`` (no data init).
        normalize: output normalization: ``"l2"`` per depth row then ``/sqrt(depth)`` (the flat vector has
            unit norm), ``"l1"`` the histogram itself (rows sum to 1), ``"none"`` the raw additive EMDE sketch
            (masked *sum* of the token assignments; rows sum to the number of valid tokens).
        assignment: ``"bits"`` (product of bit probabilities, the default) or ``"softmax"``: a per-depth
            softmax over W logits that are a learned linear map (K -> W) of the hyperplane projections,
            initialized to the code matrix so it starts exactly equal to ``"bits"``.
        init_scale: std of each hyperplane's centred projections after the data init (see module docstring).
    """

    bias_initialized: Tensor

    def __init__(
        self,
        dim: int,
        depth: int = 8,
        hyperplanes: int = 7,
        tau: float = 1.0,
        learn_tau: bool = False,
        trainable: bool = True,
        bias_init: str = "median",
        normalize: str = "l2",
        assignment: str = "bits",
        init_scale: float = 3.0,
    ) -> None:
        super().__init__()
        if dim < 1 or depth < 1 or not 1 <= hyperplanes <= 16:
            raise ValueError(f"TEMDE: need dim >= 1, depth >= 1, 1 <= hyperplanes <= 16; got {dim=}, {depth=}, "
                             f"{hyperplanes=}")
        if tau <= 0 or init_scale <= 0:
            raise ValueError(f"TEMDE: tau and init_scale must be > 0, got {tau=}, {init_scale=}")
        for name, value, allowed in (("bias_init", bias_init, BIAS_INITS), ("normalize", normalize, NORMALIZATIONS),
                                     ("assignment", assignment, ASSIGNMENTS)):
            if value not in allowed:
                raise ValueError(f"TEMDE: {name} must be one of {allowed}, got {value!r}")
        self.dim, self.depth, self.num_bits = dim, depth, hyperplanes
        self.width = 2**hyperplanes
        self.trainable, self.bias_init, self.normalize, self.assignment = trainable, bias_init, normalize, assignment
        self.init_scale = float(init_scale)

        # Gaussian directions, scaled so that |z| ~ init_scale for isotropic unit-norm inputs even before (or
        # without) the data init; the data init then rescales to the data's own spread.
        hyper = torch.randn(depth, hyperplanes, dim) * (init_scale / math.sqrt(dim))
        bias = torch.zeros(depth, hyperplanes)
        if trainable:
            self.hyperplanes = nn.Parameter(hyper)
            self.bias = nn.Parameter(bias)
        else:
            self.register_buffer("hyperplanes", hyper)
            self.register_buffer("bias", bias)
        log_tau = torch.tensor(math.log(tau))
        if learn_tau:
            self.log_tau = nn.Parameter(log_tau)
        else:
            self.register_buffer("log_tau", log_tau)
        # Saved in the state dict: a loaded model never re-initializes its biases from data.
        self.register_buffer("bias_initialized", torch.tensor(bias_init == "zero"))
        self._init_done = False
        # P(c) = P_hi(c_hi) * P_lo(c_lo) over the first (high) and last (low) bits lets the sketch be one
        # batched matmul over tokens, never materializing (B, T, depth, W). Fixed code matrix, not saved.
        self.hi_bits = (hyperplanes + 1) // 2
        self.register_buffer("log_code_matrix", _split_log_code_matrix(hyperplanes, self.hi_bits), persistent=False)
        self.register_buffer("bit_weights", 2 ** torch.arange(hyperplanes - 1, -1, -1), persistent=False)
        if assignment == "softmax":
            codes = code_matrix(hyperplanes)
            # Per-depth map K -> W; logits z @ (2C - 1)^T / 2 differ from the bits log-probabilities by a
            # per-token constant, so the softmax starts exactly equal to the bit product.
            self.assign_weight = nn.Parameter((codes - 0.5).t().repeat(depth, 1, 1).contiguous())

    # ------------------------------------------------------------------ properties and checks
    @property
    def tau(self) -> Tensor:
        return self.log_tau.exp()

    @property
    def sketch_dim(self) -> int:
        """Size of the flattened sketch, ``depth * 2**hyperplanes``."""
        return self.depth * self.width

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, depth={self.depth}, hyperplanes={self.num_bits}, width={self.width}, "
                f"trainable={self.trainable}, bias_init={self.bias_init!r}, normalize={self.normalize!r}, "
                f"assignment={self.assignment!r}, init_scale={self.init_scale}")

    def _check(self, x: Tensor, mask: Tensor | None) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.dim or not x.is_floating_point():
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"TEMDE (temde/modules/temde.py): x must be a float tensor (B, T, {self.dim}), "
                             f"got {got}")
        if mask is None:
            return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != x.shape[:2]:
            got = (tuple(mask.shape), mask.dtype) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"TEMDE (temde/modules/temde.py): mask must be a bool tensor of shape "
                             f"{tuple(x.shape[:2])} (True = valid token), got {got}")
        return mask

    # ------------------------------------------------------------------ DLSH initialization
    @torch.no_grad()
    def init_from_data(self, x: Tensor, mask: Tensor | None = None) -> None:
        """DLSH init from one batch: biases = quantiles of the valid tokens' projections, hyperplanes rescaled
        to ``init_scale`` spread. Runs automatically on the first forward; call it to choose the batch."""
        mask = self._check(x, mask)
        proj = x[mask].float() @ self.hyperplanes.detach().float().reshape(-1, self.dim).t()  # (M, N*K)
        if proj.shape[0] < 2:
            raise ValueError("TEMDE.init_from_data: need at least 2 valid tokens to take quantiles")
        if self.bias_init == "median":
            b = _column_quantiles(proj, torch.full((proj.shape[1],), 0.5, device=proj.device))
        elif self.bias_init == "random":  # a random quantile per hyperplane, as in the original EMDE release
            b = _column_quantiles(proj, torch.rand(proj.shape[1], device=proj.device))
        else:  # "zero": biases stay 0, only the scale is set
            b = torch.zeros(proj.shape[1], device=proj.device)
        spread = (proj - b).pow(2).mean(0).sqrt().clamp_min(1e-12)
        gain = self.init_scale / spread  # positive: no hard bucket changes
        self.hyperplanes.mul_(gain.view(self.depth, self.num_bits, 1).to(self.hyperplanes.dtype))
        self.bias.copy_((b * gain).view(self.depth, self.num_bits))
        self.bias_initialized.fill_(True)
        self._init_done = True

    # ------------------------------------------------------------------ core computation
    def projections(self, x: Tensor, scale: Tensor | None = None) -> Tensor:
        """(B, T, D) -> (B, T, depth, K) margins ``(x.r - b) * scale`` (one fused matmul for all depths)."""
        b, t, _ = x.shape
        flat_r, bias = self.hyperplanes.reshape(-1, self.dim), self.bias.reshape(1, -1)
        if scale is not None:  # applied to the small weights, not to the (B, T, depth, K) output
            flat_r, bias = flat_r * scale, bias * scale
        proj = torch.addmm(-bias.to(x.dtype), x.reshape(b * t, self.dim), flat_r.to(x.dtype).t())
        return proj.view(b, t, self.depth, self.num_bits)

    def _softmax_log_assign(self, z: Tensor) -> Tensor:
        """``"softmax"`` assignment: (..., depth, K) scaled margins -> (..., depth, W) log bucket probabilities."""
        logits = torch.einsum("...nk,nkw->...nw", z, self.assign_weight.to(z.dtype))
        return torch.log_softmax(logits, dim=-1)

    def _half_assign(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``"bits"`` assignment factored over the high and low bits: (..., N, 2**hi) and (..., N, 2**lo).

        log P = [logsig(z), logsig(-z)] @ [C, 1-C]^T per half (C: fixed 0/1 code matrix), both halves in one
        matmul with a block code matrix; in-place ``exp_`` is safe (a matmul's backward ignores its output).
        """
        log_p = (F.logsigmoid(torch.cat([z, -z], -1)) @ self.log_code_matrix.to(z.dtype)).exp_()
        return log_p[..., : 2**self.hi_bits], log_p[..., 2**self.hi_bits :]

    def _margins(self, x: Tensor, mask: Tensor) -> Tensor:
        """Scaled margins ``z = (x.r - b) / tau`` (B, T, depth, K); padded tokens get 0 (never NaN/inf)."""
        self._maybe_init(x, mask)
        return self.projections(x, scale=self.tau.reciprocal()).masked_fill(~mask[:, :, None, None], 0.0)

    def assign(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Soft bucket distribution of every token, (B, T, depth, W); padded tokens get uniform rows."""
        mask = self._check(x, mask)
        margins = self._margins(x, mask)
        if self.assignment == "bits":
            p_hi, p_lo = self._half_assign(margins)
            return (p_hi[..., :, None] * p_lo[..., None, :]).flatten(-2)
        return self._softmax_log_assign(margins).exp()

    def histogram(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Soft histogram (B, depth, W): masked mean over tokens of the bucket distributions; rows sum to 1.

        For ``"bits"`` it is ``sum_t w_t P_hi[t] (x) P_lo[t]`` = one batched (2**hi x T) @ (T x 2**lo) matmul
        per (item, depth): cost linear in T and no (B, T, depth, W) tensor is ever built.
        """
        mask = self._check(x, mask)
        margins = self._margins(x, mask)
        if self.assignment != "bits":
            return _masked_mean(self._softmax_log_assign(margins).exp(), mask)
        p_hi, p_lo = self._half_assign(margins)
        weights = _token_weights(mask, p_lo.dtype)
        hist = torch.einsum("btnh,btnl->bnhl", p_hi, p_lo * weights[:, :, None, None])
        return hist.reshape(x.shape[0], self.depth, self.width)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x (B, T, D) float, mask (B, T) bool (True = valid; None = all valid) -> sketch (B, depth, W)."""
        mask = self._check(x, mask)
        hist = self.histogram(x, mask)
        return self._normalize(hist, mask)

    def _normalize(self, hist: Tensor, mask: Tensor) -> Tensor:
        if self.normalize == "l2":
            return F.normalize(hist, dim=-1, eps=1e-12) / math.sqrt(self.depth)
        if self.normalize == "none":
            return hist * mask.sum(1).to(hist.dtype)[:, None, None]
        return hist

    def _maybe_init(self, x: Tensor, mask: Tensor) -> None:
        if self._init_done:  # Python-side cache: no device sync per forward once initialized
            return
        if bool(self.bias_initialized):
            self._init_done = True
        else:
            self.init_from_data(x, mask)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._init_done = False  # re-read the loaded bias_initialized flag on the next forward

    # ------------------------------------------------------------------ hard EMDE (indexing, tests)
    @torch.no_grad()
    def hard_codes(self, x: Tensor) -> Tensor:
        """(B, T, D) -> (B, T, depth) long bucket index of every token: the hard EMDE code (no gradient)."""
        self._check(x, None)
        margins = self.projections(x)
        if self.assignment == "bits":
            return ((margins > 0).long() * self.bit_weights).sum(-1)
        return self._softmax_log_assign(margins).argmax(-1)

    @torch.no_grad()
    def hard_histogram(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Hard (non-differentiable) EMDE histogram (B, depth, W) of the same hyperplanes: one-hot bucket
        codes, masked mean over tokens (rows sum to 1), before output normalization."""
        mask = self._check(x, mask)
        self._maybe_init(x, mask)
        onehot = F.one_hot(self.hard_codes(x), self.width).to(x.dtype)
        return _masked_mean(onehot, mask)

    def hard_sketch(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Hard histogram with this module's output normalization applied (same layout as ``forward``)."""
        mask = self._check(x, mask)
        return self._normalize(self.hard_histogram(x, mask), mask)


def _split_log_code_matrix(bits: int, hi_bits: int) -> Tensor:
    """(2K, 2**hi + 2**lo) block matrix: ``[logsig(z), logsig(-z)] @ it`` gives the log-probabilities of the
    2**hi codes of the first ``hi_bits`` bits, then of the 2**lo codes of the remaining bits."""
    lo_bits = bits - hi_bits
    hi, lo = code_matrix(hi_bits).t(), code_matrix(lo_bits).t()  # (hi, 2**hi), (lo, 2**lo)
    out = torch.zeros(2 * bits, 2**hi_bits + 2**lo_bits)
    w_hi = 2**hi_bits
    out[:hi_bits, :w_hi] = hi  # logsig(z_k) where bit k = 1
    out[bits : bits + hi_bits, :w_hi] = 1.0 - hi  # logsig(-z_k) where bit k = 0
    out[hi_bits:bits, w_hi:] = lo
    out[bits + hi_bits :, w_hi:] = 1.0 - lo
    return out


def _token_weights(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """(B, T) bool -> (B, T) weights 1/count on valid tokens, 0 on padding."""
    weights = mask.to(dtype)
    return weights / weights.sum(1, keepdim=True).clamp_min(_MIN_COUNT)


def _masked_mean(assign: Tensor, mask: Tensor) -> Tensor:
    """(B, T, N, W) x (B, T) bool -> (B, N, W) mean over valid tokens, as one batched matmul."""
    b, t, n, w = assign.shape
    weights = _token_weights(mask, assign.dtype)
    return torch.bmm(weights.unsqueeze(1), assign.reshape(b, t, n * w)).view(b, n, w)


def _column_quantiles(values: Tensor, q: Tensor) -> Tensor:
    """Quantile ``q[j]`` of column ``j`` of (M, C) ``values``, linear interpolation (like torch.quantile)."""
    m = values.shape[0]
    sorted_vals = values.sort(dim=0).values
    pos = q.clamp(0, 1) * (m - 1)
    lo = pos.floor().long().clamp(max=m - 1)
    hi = (lo + 1).clamp(max=m - 1)
    frac = (pos - lo).to(values.dtype)
    cols = torch.arange(values.shape[1], device=values.device)
    return sorted_vals[lo, cols] * (1 - frac) + sorted_vals[hi, cols] * frac
