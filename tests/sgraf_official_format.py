"""Test helpers: official-format SGRAF state dicts (names/shapes of the official format, docs/sgraf.md "Official checkpoint format") with random weights, and an
independent per-caption reference forward pass written from the spec (plain tensor ops, float64, no temde code).
"""

from __future__ import annotations

import argparse
import math
from collections import OrderedDict

import torch
from torch import Tensor

NUM_REGIONS = 36


def official_state_dicts(
    vocab_size: int = 40,
    img_dim: int = 24,
    word_dim: int = 12,
    embed_size: int = 16,
    sim_dim: int = 8,
    module_name: str = "SGR",
    sgr_step: int = 3,
    seed: int = 0,
) -> list[OrderedDict]:
    """[img_enc_sd, txt_enc_sd, sim_enc_sd] with the exact official key names, random weights and BN stats."""
    g = torch.Generator().manual_seed(seed)

    def w(*shape: int) -> Tensor:
        fan_in = shape[-1] if len(shape) > 1 else 1
        return torch.randn(*shape, generator=g) / math.sqrt(fan_in)

    def bn(prefix: str, n: int, sd: OrderedDict) -> None:
        sd[f"{prefix}.weight"] = 1 + 0.3 * torch.randn(n, generator=g)
        sd[f"{prefix}.bias"] = 0.3 * torch.randn(n, generator=g)
        sd[f"{prefix}.running_mean"] = 0.2 * torch.randn(n, generator=g)
        sd[f"{prefix}.running_var"] = 0.5 + torch.rand(n, generator=g)
        sd[f"{prefix}.num_batches_tracked"] = torch.tensor(1234, dtype=torch.int64)

    d, m = embed_size, sim_dim
    img = OrderedDict([("fc.weight", w(d, img_dim)), ("fc.bias", 0.1 * w(d))])
    txt = OrderedDict([("embed.weight", torch.rand(vocab_size, word_dim, generator=g) * 0.2 - 0.1)])
    for suffix in ("", "_reverse"):
        txt[f"cap_rnn.weight_ih_l0{suffix}"] = w(3 * d, word_dim)
        txt[f"cap_rnn.weight_hh_l0{suffix}"] = w(3 * d, d)
        txt[f"cap_rnn.bias_ih_l0{suffix}"] = 0.1 * w(3 * d)
        txt[f"cap_rnn.bias_hh_l0{suffix}"] = 0.1 * w(3 * d)
    sim: OrderedDict = OrderedDict()
    sim["v_global_w.embedding_local.0.weight"] = w(d, d)
    sim["v_global_w.embedding_local.0.bias"] = 0.1 * w(d)
    bn("v_global_w.embedding_local.1", NUM_REGIONS, sim)
    sim["v_global_w.embedding_global.0.weight"] = w(d, d)
    sim["v_global_w.embedding_global.0.bias"] = 0.1 * w(d)
    bn("v_global_w.embedding_global.1", d, sim)
    sim["v_global_w.embedding_common.0.weight"] = w(1, d)
    sim["v_global_w.embedding_common.0.bias"] = 0.1 * w(1)
    for name in ("embedding_local", "embedding_global"):
        sim[f"t_global_w.{name}.0.weight"] = w(d, d)
        sim[f"t_global_w.{name}.0.bias"] = 0.1 * w(d)
    sim["t_global_w.embedding_common.0.weight"] = w(1, d)
    sim["t_global_w.embedding_common.0.bias"] = 0.1 * w(1)
    for name in ("sim_tranloc_w", "sim_tranglo_w"):
        sim[f"{name}.weight"] = w(m, d)
        sim[f"{name}.bias"] = 0.1 * w(m)
    sim["sim_eval_w.weight"] = 3 * w(1, m)
    sim["sim_eval_w.bias"] = 0.1 * w(1)
    if module_name == "SGR":
        for k in range(sgr_step):
            for name in ("graph_query_w", "graph_key_w", "sim_graph_w"):
                sim[f"SGR_module.{k}.{name}.weight"] = 2 * w(m, m)
                sim[f"SGR_module.{k}.{name}.bias"] = 0.1 * w(m)
    else:
        sim["SAF_module.attn_sim_w.weight"] = 3 * w(1, m)
        sim["SAF_module.attn_sim_w.bias"] = 0.1 * w(1)
        bn("SAF_module.bn", 1, sim)
    return [img, txt, sim]


def official_opt(vocab_size: int, img_dim: int, word_dim: int, embed_size: int, sim_dim: int,
                 module_name: str, sgr_step: int = 3) -> argparse.Namespace:
    """The pickled ``opt`` of an official checkpoint (opts.py defaults + the given sizes)."""
    return argparse.Namespace(
        data_path="/data", data_name="f30k_precomp", vocab_path="./vocab/", model_name="./runs/x/checkpoint",
        logger_name="./runs/x/log", batch_size=128, num_epochs=40, lr_update=30, learning_rate=0.0002,
        workers=10, log_step=10, val_step=1000, grad_clip=2.0, margin=0.2, max_violation=True,
        img_dim=img_dim, word_dim=word_dim, embed_size=embed_size, sim_dim=sim_dim, num_layers=1, bi_gru=True,
        no_imgnorm=False, no_txtnorm=False, module_name=module_name, sgr_step=sgr_step, vocab_size=vocab_size,
    )


# ---------------------------------------------------------------------------------------------------------------
# Reference forward (eval mode), one caption at a time, float64, written from docs/sgraf.md "Architecture".
# ---------------------------------------------------------------------------------------------------------------
EPS = 1e-8
BN_EPS = 1e-5


def _l2(x: Tensor, dim: int) -> Tensor:
    return x / (x.pow(2).sum(dim, keepdim=True).sqrt() + EPS)


def _lin(sd: dict, name: str, x: Tensor) -> Tensor:
    return x @ sd[f"{name}.weight"].double().t() + sd[f"{name}.bias"].double()


def _bn_eval(sd: dict, name: str, x: Tensor, channel_dim: int) -> Tensor:
    shape = [1] * x.dim()
    shape[channel_dim] = -1

    def p(k: str) -> Tensor:
        return sd[f"{name}.{k}"].double().view(shape)

    return (x - p("running_mean")) / torch.sqrt(p("running_var") + BN_EPS) * p("weight") + p("bias")


def _gru_direction(sd: dict, suffix: str, x: Tensor) -> Tensor:
    """x (T, W) -> hidden states (T, H); gates r, z, n (PyTorch semantics)."""
    w_ih, w_hh = sd[f"cap_rnn.weight_ih_l0{suffix}"].double(), sd[f"cap_rnn.weight_hh_l0{suffix}"].double()
    b_ih, b_hh = sd[f"cap_rnn.bias_ih_l0{suffix}"].double(), sd[f"cap_rnn.bias_hh_l0{suffix}"].double()
    hidden = w_hh.shape[1]
    h = torch.zeros(hidden, dtype=torch.float64)
    out = []
    for t in range(x.shape[0]):
        gi, gh = w_ih @ x[t] + b_ih, w_hh @ h + b_hh
        r = torch.sigmoid(gi[:hidden] + gh[:hidden])
        z = torch.sigmoid(gi[hidden : 2 * hidden] + gh[hidden : 2 * hidden])
        n = torch.tanh(gi[2 * hidden :] + r * gh[2 * hidden :])
        h = (1 - z) * n + z * h
        out.append(h)
    return torch.stack(out)


def reference_text(sd_txt: dict, tokens: Tensor) -> Tensor:
    """One caption's valid token ids (L,) -> word features (L, D)."""
    emb = sd_txt["embed.weight"].double()[tokens]
    fwd = _gru_direction(sd_txt, "", emb)
    bwd = _gru_direction(sd_txt, "_reverse", emb.flip(0)).flip(0)
    return _l2((fwd + bwd) / 2, dim=-1)


def reference_similarities(sds: list[dict], images: Tensor, tokens: Tensor, lengths: Tensor, module_name: str,
                           lam: float = 9.0) -> Tensor:
    """Official-semantics (N_img, N_cap) scores, one caption at a time against all images (eval mode)."""
    sd_img, sd_txt, sd = sds
    v = _l2(_lin(sd_img, "fc", images.double()), dim=-1)  # (N, R, D)
    n = v.shape[0]
    # VisualSA (eval): BN over region slots (dim 1) and over features.
    l_emb = torch.tanh(_bn_eval(sd, "v_global_w.embedding_local.1", _lin(sd, "v_global_w.embedding_local.0", v), 1))
    g_emb = torch.tanh(_bn_eval(sd, "v_global_w.embedding_global.1",
                                _lin(sd, "v_global_w.embedding_global.0", v.mean(1)), 1))
    weights = torch.softmax(_lin(sd, "v_global_w.embedding_common.0", l_emb * g_emb[:, None]).squeeze(-1), dim=1)
    v_glo = _l2((weights[:, :, None] * v).sum(1), dim=-1)
    columns = []
    for i in range(tokens.shape[0]):
        t = reference_text(sd_txt, tokens[i, : int(lengths[i])])  # (L_i, D)
        tl = torch.tanh(_lin(sd, "t_global_w.embedding_local.0", t))
        tg = torch.tanh(_lin(sd, "t_global_w.embedding_global.0", t.mean(0)))
        tw = torch.softmax(_lin(sd, "t_global_w.embedding_common.0", tl * tg).squeeze(-1), dim=0)
        t_glo = _l2((tw[:, None] * t).sum(0), dim=-1)
        q = t.unsqueeze(0).expand(n, -1, -1)  # (N, L_i, D)
        attn = torch.nn.functional.leaky_relu(v @ q.transpose(1, 2), 0.1)  # (N, R, L_i)
        attn = _l2(attn, dim=2)
        attn = torch.softmax(lam * attn.transpose(1, 2), dim=2)  # (N, L_i, R)
        ctx = _l2(attn @ v, dim=-1)
        s_loc = _l2(_lin(sd, "sim_tranloc_w", (ctx - q).pow(2)), dim=-1)
        s_glo = _l2(_lin(sd, "sim_tranglo_w", (v_glo - t_glo).pow(2)), dim=-1)
        nodes = torch.cat([s_glo[:, None], s_loc], dim=1)
        if module_name == "SGR":
            k = 0
            while f"SGR_module.{k}.graph_query_w.weight" in sd:
                qn = _lin(sd, f"SGR_module.{k}.graph_query_w", nodes)
                kn = _lin(sd, f"SGR_module.{k}.graph_key_w", nodes)
                edges = torch.softmax(qn @ kn.transpose(1, 2), dim=-1)
                nodes = torch.relu(_lin(sd, f"SGR_module.{k}.sim_graph_w", edges @ nodes))
                k += 1
            sim_vec = nodes[:, 0]
        else:
            a = _lin(sd, "SAF_module.attn_sim_w", nodes).transpose(1, 2)  # (N, 1, L_i+1)
            a = torch.sigmoid(_bn_eval(sd, "SAF_module.bn", a, 1))
            a = a / (a.abs().sum(-1, keepdim=True) + EPS)
            sim_vec = _l2((a @ nodes).squeeze(1), dim=-1)
        columns.append(torch.sigmoid(_lin(sd, "sim_eval_w", sim_vec)))
    return torch.cat(columns, dim=1)
