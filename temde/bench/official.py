"""The official SGRAF evaluation strategy, re-implemented on a :class:`~temde.models.sgraf.SGRAF`'s weights.

This is the baseline every scoring figure is compared with, so it must be the real official strategy, not a
straw man built from our own (faster) kernels. Official ``evaluation.shard_attn_scores`` cuts the gallery into
shards of 100 images x 100 captions and calls ``forward_sim`` on each; ``EncoderSimilarity.forward`` then loops
over the shard's captions. For caption ``i`` (cut to its length ``L_i``) against the shard's ``n`` images:

* the caption is repeated ``n`` times and SCAN text-to-image attention runs as batched matmuls:
  ``A = LeakyReLU_0.1(V Q^T)``, l2norm over words, transpose, ``softmax(9 A)`` over regions, ``ctx = A V``,
  l2norm over features;
* ``sim_loc = l2norm(W_loc (ctx - Q)^2)``; the image global vectors (VisualSA) are computed once per shard, the
  caption's (TextSA on its ``L_i`` words) once per caption; ``sim_glo = l2norm(W_glo (g_img - g_txt)^2)``;
* SGR: every one of the 3 steps on all ``L_i + 1`` nodes with separate query and key projections
  (``E = softmax((W_q S)(W_k S)^T)``, ``S = ReLU(W_g E S)``), node 0 read out; or SAF: ``BN(W_f S)`` with
  running statistics, sigmoid, l1norm, weighted sum, l2norm; then ``sigmoid(W_eval sim_vec)``.

``l2norm(x) = x / (sqrt(sum x^2) + 1e-8)`` and ``l1norm(x) = x / (sum |x| + 1e-8)`` as in the official code.
The only liberty: region/word features come from our encoders (identical by construction, float32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from temde.models.sgraf import SGRAF
from temde.modules.attention import ATTN_LEAKY_SLOPE
from temde.modules.norms import NORM_EPS
from temde.repr import Repr

OFFICIAL_SHARD = 100  # shard_attn_scores(shard_size=100): images and captions per forward_sim call


def _l2(x: Tensor, dim: int) -> Tensor:
    return x / (x.pow(2).sum(dim=dim, keepdim=True).sqrt() + NORM_EPS)


def _l1(x: Tensor, dim: int) -> Tensor:
    return x / (x.abs().sum(dim=dim, keepdim=True) + NORM_EPS)


def _scan_attention(query: Tensor, context: Tensor, smooth: float) -> Tensor:
    """query (n, L, D) repeated caption, context (n, R, D) regions -> l2-normalised contexts (n, L, D)."""
    attn = torch.bmm(context, query.transpose(1, 2))  # (n, R, L)
    attn = F.leaky_relu(attn, ATTN_LEAKY_SLOPE)
    attn = _l2(attn, 2)
    attn = attn.transpose(1, 2).contiguous()  # (n, L, R)
    attn = F.softmax(attn * smooth, dim=2)
    weighted = torch.bmm(context.transpose(1, 2), attn.transpose(1, 2).contiguous())  # (n, D, L)
    return _l2(weighted.transpose(1, 2), -1)


def _sgr_step(layer: torch.nn.Module, nodes: Tensor) -> Tensor:
    query = layer.graph_query_w(nodes)
    key = layer.graph_key_w(nodes)
    edges = torch.softmax(torch.bmm(query, key.permute(0, 2, 1)), dim=-1)
    return torch.relu(layer.sim_graph_w(torch.bmm(edges, nodes)))


def _saf(module: torch.nn.Module, nodes: Tensor) -> Tensor:
    bn = module.bn
    logits = module.attn_sim_w(nodes).permute(0, 2, 1)  # (n, 1, nodes)
    logits = F.batch_norm(logits, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    weights = _l1(torch.sigmoid(logits), -1)
    return _l2(torch.matmul(weights, nodes).squeeze(1), -1)


@torch.no_grad()
def forward_sim(model: SGRAF, regions: Tensor, words: Tensor, lengths: list[int]) -> Tensor:
    """Official ``EncoderSimilarity.forward``: (n_img, n_cap) scores, one caption at a time."""
    enc = model.sim_enc
    n_img = regions.shape[0]
    img_glo = enc.v_global_w(regions, None)
    out = []
    for i, length in enumerate(lengths):
        cap = words[i : i + 1, :length]
        cap_expand = cap.repeat(n_img, 1, 1)
        cap_glo = enc.t_global_w(cap, None)
        ctx = _scan_attention(cap_expand, regions, model.attn_lambda)
        sim_loc = _l2(enc.sim_tranloc_w(torch.pow(ctx - cap_expand, 2)), -1)
        sim_glo = _l2(enc.sim_tranglo_w(torch.pow(img_glo - cap_glo, 2)), -1)
        nodes = torch.cat([sim_glo.unsqueeze(1), sim_loc], 1)
        if enc.module_name == "SGR":
            for layer in enc.SGR_module:
                nodes = _sgr_step(layer, nodes)
            sim_vec = nodes[:, 0, :]
        else:
            sim_vec = _saf(enc.SAF_module, nodes)
        out.append(torch.sigmoid(enc.sim_eval_w(sim_vec)))
    return torch.cat(out, 1)


@torch.no_grad()
def official_scores(model: SGRAF, img: Repr, txt: Repr, device: torch.device | str = "cpu",
                    shard: int = OFFICIAL_SHARD) -> Tensor:
    """Official ``shard_attn_scores``: 100 x 100 shards, each through :func:`forward_sim`. Needs SA global
    vectors (``global=sa``, the official model) and all regions valid (36 per image)."""
    if model.global_kind != "sa":
        raise ValueError("the official per-caption baseline is defined for SGRAF's own SA global encoder")
    regions, words = img["regions"].to(device), txt["words"].to(device)
    lengths = txt["words_mask"].sum(1).tolist()
    n_img, n_cap = regions.shape[0], words.shape[0]
    sims = torch.empty(n_img, n_cap)
    for i in range(0, n_img, shard):
        for j in range(0, n_cap, shard):
            sims[i : i + shard, j : j + shard] = forward_sim(model, regions[i : i + shard], words[j : j + shard],
                                                             lengths[j : j + shard]).float().cpu()
    return sims
