"""Properties of the T-EMDE sketch (docs/temde.md, "Tests"), each checked against an
independent brute-force computation written here from the spec (explicit loops over buckets and bits)."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch

from temde.modules.temde import TEMDE, code_matrix

DIM, DEPTH, BITS = 12, 3, 4  # small on purpose: the brute force loops over every bucket and bit


def make(seed: int = 0, **kw) -> TEMDE:
    torch.manual_seed(seed)
    kw = {"depth": DEPTH, "hyperplanes": BITS, **kw}
    return TEMDE(DIM, **kw)


def tokens(b: int = 3, t: int = 6, seed: int = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, DIM, generator=g, dtype=dtype)
    return torch.nn.functional.normalize(x, dim=-1)


def ragged_mask(b: int, t: int) -> torch.Tensor:
    lengths = torch.tensor([t, max(2, t - 2), max(2, t // 2)] * b)[:b]
    return torch.arange(t)[None, :] < lengths[:, None]


# ---------------------------------------------------------------- brute force references (loops, spec only)
def brute_bucket_probs(m: TEMDE, x: torch.Tensor) -> torch.Tensor:
    """(B, T, N, W): P(bucket c) = prod_k p_k^c_k (1 - p_k)^(1 - c_k), p_k = sigmoid((x.r_k - b_k) / tau),
    bit k of c read most-significant first, one explicit loop per (token, depth, bucket, bit)."""
    x = x.double()
    r, bias, tau = m.hyperplanes.detach().double(), m.bias.detach().double(), float(m.tau)
    b, t, _ = x.shape
    n, k = bias.shape
    out = torch.zeros(b, t, n, 2**k, dtype=torch.float64)
    for i, j, d in itertools.product(range(b), range(t), range(n)):
        p = [1.0 / (1.0 + math.exp(-float(x[i, j] @ r[d, h] - bias[d, h]) / tau)) for h in range(k)]
        for c in range(2**k):
            prob = 1.0
            for h in range(k):
                bit = (c >> (k - 1 - h)) & 1
                prob *= p[h] if bit else 1.0 - p[h]
            out[i, j, d, c] = prob
    return out


def brute_hard_histogram(r: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Hard EMDE: bucket = the K bits [x.r_k > b_k] read as an integer; histogram = counts / valid tokens."""
    b, t, _ = x.shape
    n, k = bias.shape
    out = torch.zeros(b, n, 2**k, dtype=torch.float64)
    for i in range(b):
        valid = [j for j in range(t) if mask[i, j]]
        for j, d in itertools.product(valid, range(n)):
            c = 0
            for h in range(k):
                c = 2 * c + int(float(x[i, j].double() @ r[d, h].double()) > float(bias[d, h]))
            out[i, d, c] += 1.0 / len(valid)
    return out


def brute_histogram(probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(probs.shape[0], *probs.shape[2:], dtype=torch.float64)
    for i in range(probs.shape[0]):
        valid = [j for j in range(probs.shape[1]) if mask[i, j]]
        for j in valid:
            out[i] += probs[i, j] / len(valid)
    return out


# ---------------------------------------------------------------- core maths
def test_code_matrix_reads_bits_most_significant_first():
    codes = code_matrix(3)
    assert codes.shape == (8, 3)
    for c in range(8):
        assert int("".join(str(int(v)) for v in codes[c]), 2) == c


@pytest.mark.parametrize("bits", [1, 4, 5])
def test_soft_assignment_matches_brute_force_bit_product(bits):
    m = make(hyperplanes=bits, tau=0.7)
    x, mask = tokens(), ragged_mask(3, 6)
    m.init_from_data(x, mask)
    probs = m.assign(x, mask).double()
    ref = brute_bucket_probs(m, x)
    valid = mask[:, :, None, None].expand_as(ref)
    torch.testing.assert_close(probs[valid], ref[valid], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(m.histogram(x, mask).double(), brute_histogram(ref, mask), atol=1e-6, rtol=1e-5)


def test_rows_sum_to_one_before_output_normalization():
    m = make()
    x, mask = tokens(4, 7), ragged_mask(4, 7)
    hist = m.histogram(x, mask)
    assert hist.shape == (4, DEPTH, 2**BITS)
    torch.testing.assert_close(hist.sum(-1), torch.ones(4, DEPTH))
    assert (hist >= 0).all()
    torch.testing.assert_close(m.assign(x, mask).sum(-1), torch.ones(4, 7, DEPTH))


def test_output_normalizations():
    x, mask = tokens(4, 7), ragged_mask(4, 7)
    base = make(normalize="l1")
    hist = base(x, mask)
    torch.testing.assert_close(hist, base.histogram(x, mask))
    l2 = make(normalize="l2")
    l2.load_state_dict(base.state_dict())
    out = l2(x, mask)
    torch.testing.assert_close(out.flatten(1).norm(dim=1), torch.ones(4))  # flat vector has unit norm
    torch.testing.assert_close(out, hist / hist.norm(dim=-1, keepdim=True) / math.sqrt(DEPTH))
    raw = make(normalize="none")
    raw.load_state_dict(base.state_dict())
    torch.testing.assert_close(raw(x, mask), base.assign(x, mask).mul(mask[:, :, None, None]).sum(1))


def test_permutation_invariance():
    m = make()
    x, mask = tokens(3, 8), ragged_mask(3, 8)
    out = m(x, mask)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(m(x[:, perm], mask[:, perm]), out, atol=1e-6, rtol=1e-5)


def test_padding_invariance_even_with_garbage_padding():
    m = make()
    x, mask = tokens(3, 6), ragged_mask(3, 6)
    out = m(x, mask)
    garbage = torch.full((3, 5, DIM), 1e6)
    garbage[0, 0, 0], garbage[1, 1, 1] = float("nan"), float("inf")
    x_pad = torch.cat([x, garbage], dim=1)
    mask_pad = torch.cat([mask, torch.zeros(3, 5, dtype=torch.bool)], dim=1)
    x_pad = torch.where(mask_pad[..., None], x_pad, torch.where(torch.isnan(x_pad), x_pad, -x_pad))
    torch.testing.assert_close(m(x_pad, mask_pad), out, atol=1e-6, rtol=1e-5)
    # Each item alone, unpadded, gives the same sketch as inside the ragged batch.
    for i in range(3):
        n = int(mask[i].sum())
        torch.testing.assert_close(m(x[i : i + 1, :n]), out[i : i + 1], atol=1e-6, rtol=1e-5)
    assert torch.isfinite(m.hard_histogram(x_pad, mask_pad)).all()


def test_empty_set_gives_zero_sketch_not_nan():
    m = make()
    x = tokens(2, 4)
    mask = torch.tensor([[True] * 4, [False] * 4])
    m.init_from_data(x[:1])
    out = m(x, mask)
    assert torch.isfinite(out).all() and out[1].abs().sum() == 0


# ---------------------------------------------------------------- tau -> 0 is hard EMDE
@pytest.mark.parametrize("assignment", ["bits", "softmax"])
def test_tau_to_zero_equals_hard_histogram_exactly(assignment):
    m = make(tau=1e-7, assignment=assignment)
    x, mask = tokens(4, 8, seed=5), ragged_mask(4, 8)
    m.init_from_data(x, mask)
    margins = m.projections(x).detach()
    assert margins[mask].abs().min() > 1e-4, "inputs must sit away from the hyperplanes (|z| > 1000)"
    onehot = torch.nn.functional.one_hot(m.hard_codes(x), 2**BITS).float()
    assert torch.equal(m.assign(x, mask)[mask], onehot[mask])  # per token: exactly one-hot
    hard = m.hard_histogram(x, mask)
    torch.testing.assert_close(m.histogram(x, mask), hard, atol=1e-7, rtol=0)
    brute = brute_hard_histogram(m.hyperplanes.detach(), m.bias.detach(), x, mask)
    torch.testing.assert_close(hard.double(), brute, atol=1e-7, rtol=0)


def test_small_tau_converges_to_hard_histogram():
    x, mask = tokens(4, 8, seed=5), ragged_mask(4, 8)
    base = make()
    base.init_from_data(x, mask)
    errors = []
    for tau in (1.0, 0.1, 0.01, 1e-4):
        m = make(tau=tau)
        state = {k: v for k, v in base.state_dict().items() if k != "log_tau"}
        m.load_state_dict(state, strict=False)
        errors.append(float((m.histogram(x, mask) - base.hard_histogram(x, mask)).abs().max()))
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-3


# ---------------------------------------------------------------- DLSH initialization, state dict
def test_median_init_splits_first_batch_and_sets_scale_ignoring_padding():
    m = make(init_scale=2.5)
    x, mask = tokens(6, 10, seed=7), ragged_mask(6, 10)
    x_garbage = torch.where(mask[..., None], x, torch.full_like(x, 50.0))
    assert not bool(m.bias_initialized)
    m(x_garbage, mask)
    assert bool(m.bias_initialized)
    margins = m.projections(x)[mask]  # (M, N, K) over valid tokens
    n_valid = margins.shape[0]
    above = (margins > 0).sum(0)
    assert ((above - n_valid / 2).abs() <= 1).all()  # median: each hyperplane halves the first batch
    torch.testing.assert_close(margins.pow(2).mean(0).sqrt(), torch.full((DEPTH, BITS), 2.5), rtol=1e-4, atol=1e-4)


def test_random_quantile_init_is_within_the_data_range():
    m = make(bias_init="random")
    x = tokens(4, 10, seed=8)
    r0 = m.hyperplanes.detach().clone()
    m.init_from_data(x)
    proj = (x.reshape(-1, DIM) @ r0.reshape(-1, DIM).t()).view(-1, DEPTH, BITS)
    gain = m.hyperplanes.detach().norm(dim=-1) / r0.norm(dim=-1)
    b0 = m.bias.detach() / gain  # bias in the original hyperplane units
    assert ((b0 >= proj.min(0).values - 1e-5) & (b0 <= proj.max(0).values + 1e-5)).all()
    assert b0.std() > 0


def test_init_happens_once_and_state_dict_round_trip_keeps_biases():
    m = make()
    x1, x2 = tokens(3, 6, seed=10), tokens(3, 6, seed=11) * 3 + 0.5
    m(x1)
    bias, hyper = m.bias.detach().clone(), m.hyperplanes.detach().clone()
    m(x2)  # a second batch never re-initializes
    assert torch.equal(m.bias, bias) and torch.equal(m.hyperplanes, hyper)
    state = copy.deepcopy(m.state_dict())
    assert "bias_initialized" in state and bool(state["bias_initialized"])
    fresh = make(seed=123)
    fresh.load_state_dict(state)
    fresh(x2)  # must not re-initialize from x2
    assert torch.equal(fresh.bias, bias) and torch.equal(fresh.hyperplanes, hyper)
    torch.testing.assert_close(fresh(x2), m(x2))


def test_static_emde_is_dlsh_with_fixed_parameters():
    m = make(trainable=False)
    assert list(m.parameters()) == []
    x, mask = tokens(4, 8, seed=12), ragged_mask(4, 8)  # 8 + 6 + 4 + 8 = 26 valid tokens (even: no ties)
    r0 = m.hyperplanes.clone()
    m.init_from_data(x, mask)
    # Reference DLSH: median of the first batch's projections on the *original* hyperplanes.
    proj = (x[mask] @ r0.reshape(-1, DIM).t()).double()
    b0 = torch.quantile(proj, 0.5, dim=0).view(DEPTH, BITS)
    torch.testing.assert_close(m.hard_histogram(x, mask).double(), brute_hard_histogram(r0, b0, x, mask), atol=1e-7,
                               rtol=0)
    x.requires_grad_(True)
    m(x, mask).sum().backward()
    assert x.grad is not None and m.hyperplanes.grad is None
    fresh = make(seed=9, trainable=False)
    fresh.load_state_dict(m.state_dict())
    assert torch.equal(fresh.bias, m.bias) and bool(fresh.bias_initialized)


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("assignment", ["bits", "softmax"])
def test_gradients_reach_hyperplanes_bias_tau_and_inputs(assignment):
    m = make(learn_tau=True, assignment=assignment)
    x, mask = tokens(3, 6), ragged_mask(3, 6)
    m.init_from_data(x, mask)
    x = x.clone().requires_grad_(True)
    target = torch.rand(3, DEPTH, 2**BITS)
    (m(x, mask) * target).sum().backward()
    grads = {"hyperplanes": m.hyperplanes.grad, "bias": m.bias.grad, "log_tau": m.log_tau.grad, "x": x.grad}
    if assignment == "softmax":
        grads["assign_weight"] = m.assign_weight.grad
    for name, g in grads.items():
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, name
    assert x.grad[~mask].abs().sum() == 0  # padding gets no gradient


def test_gradcheck_float64():
    torch.manual_seed(0)
    m = TEMDE(4, depth=2, hyperplanes=3, learn_tau=True).double()
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    m.init_from_data(x, mask)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, r, b: _with(m, r, b)(x, mask), (x, m.hyperplanes, m.bias))


def _with(m: TEMDE, r: torch.Tensor, b: torch.Tensor) -> TEMDE:
    m.hyperplanes.data, m.bias.data = r.detach(), b.detach()
    return m


def test_softmax_assignment_starts_equal_to_bits():
    bits, soft = make(), make(assignment="softmax")
    x, mask = tokens(), ragged_mask(3, 6)
    bits.init_from_data(x, mask)
    soft.load_state_dict(bits.state_dict(), strict=False)
    torch.testing.assert_close(soft(x, mask), bits(x, mask), atol=1e-6, rtol=1e-5)
    away = bits.projections(x).detach().abs().amin(-1) > 1e-4  # the median token itself sits on a hyperplane
    assert torch.equal(soft.hard_codes(x)[away], bits.hard_codes(x)[away]) and away.float().mean() > 0.5


# ---------------------------------------------------------------- errors, factory
@pytest.mark.parametrize(
    ("x", "mask", "match"),
    [
        (torch.randn(3, DIM), None, r"\(B, T, 12\)"),
        (torch.randn(2, 3, DIM + 1), None, r"\(B, T, 12\)"),
        (torch.ones(2, 3, DIM, dtype=torch.long), None, "float"),
        (torch.randn(2, 3, DIM), torch.ones(2, 4, dtype=torch.bool), r"mask must be a bool tensor of shape \(2, 3\)"),
        (torch.randn(2, 3, DIM), torch.ones(2, 3), "mask must be a bool"),
    ],
)
def test_bad_inputs_raise_clear_errors(x, mask, match):
    with pytest.raises(ValueError, match=match):
        make()(x, mask)


def test_bad_constructor_arguments():
    for kw in ({"bias_init": "mean"}, {"normalize": "l3"}, {"assignment": "argmax"}, {"tau": 0.0},
               {"hyperplanes": 0}):
        with pytest.raises(ValueError):
            TEMDE(DIM, **kw)


def test_loading_an_uninitialized_state_re_arms_the_data_init():
    m, fresh = make(), make(seed=4)
    x = tokens(3, 6, seed=13)
    m(x)
    m.load_state_dict(fresh.state_dict())  # bias_initialized False again
    assert not bool(m.bias_initialized)
    m(x)
    assert bool(m.bias_initialized) and m.bias.abs().sum() > 0


def test_zero_bias_init_keeps_zero_bias():
    m = make(bias_init="zero")
    assert bool(m.bias_initialized)
    m(tokens())
    assert m.bias.abs().sum() == 0
    m.init_from_data(tokens())  # explicit call: scale only
    assert m.bias.abs().sum() == 0
