"""VSRN (Li et al., ICCV 2019) as a :class:`temde.models.base.RetrievalModel`, optionally with T-EMDE.

Image side (official ``EncoderImagePrecompAttn``): fc -> [coco: L2 norm over the *region* axis] -> 4 Rs_GCN blocks
-> L2 norm over the region axis (= V*, also the caption branch input) -> GRU over the regions, last hidden state
-> [f30k: BatchNorm1d] -> L2 norm. Text side: embedding -> GRU -> last valid state -> L2 norm. Score: cosine.
The two official paths (docs/vsrn.md, "Two official paths") are the explicit ``variant`` switch ("f30k" / "coco"); nothing
looks at a dataset name.

Training adds the caption-generation loss (:mod:`temde.modules.decoder`) through ``auxiliary_losses``, 1:1
with the contrastive loss as in the official ``train_emb``.

T-EMDE (``sketch``, our reconstruction, see docs/temde.md "Integration"; the sketcher options are the
``global_pooling`` spec of the ``configs/global`` group, a T-EMDE kind):
- ``sketch="none"`` (default): the official model; no sketcher is built and ``global_pooling`` must be absent.
- ``sketch="additive"``: sketches of the GCN-enhanced regions and of the word GRU states are added to the
  similarity: cos(v, t) + lambda * cos(S_img, S_txt). Each sketch depends on its own modality only, so both are
  part of the per-item representation and galleries can be precomputed and indexed.
- ``sketch="replace"``: the 4 Rs_GCN blocks are replaced by one T-EMDE sketch of the image's regions,
  projected to D and added to every region as global context (the latency variant).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from temde.errors import InputError
from temde.modules.decoder import MAX_LEN, CaptionGenerator
from temde.modules.gcn import RegionGCN
from temde.modules.hf_text import (
    PRETRAINED_LR_SCALE,
    TransformerTextEncoder,
    check_text_encoder,
    param_groups,
)
from temde.modules.norms import l2norm_clamped as l2norm
from temde.modules.norms import lengths_to_mask, masked_mean
from temde.modules.pooling import build_global_pooling
from temde.modules.vsrn_text import VSRNTextEncoder
from temde.repr import Repr

VARIANTS = ("f30k", "coco")
SKETCH_MODES = ("none", "additive", "replace")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"VSRN: {name}={value!r} is not one of {choices}")


def sketch_vector(sketcher: nn.Module, tokens: Tensor, mask: Tensor | None) -> Tensor:
    """Flat unit-norm sketch (B, depth * width) of a token set; tokens are L2-normalised first.

    Normalising each token puts image regions and word states on the same (unit-sphere) scale before the
    shared hyperplanes partition them, as the SGRAF integration does with its l2-normalised inputs.
    """
    if mask is None:
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    sketch = sketcher(l2norm(tokens, dim=-1), mask)
    return l2norm(sketch.flatten(1), dim=-1)


def _build_sketchers(dim: int, spec: Mapping[str, Any] | None) -> tuple[nn.Module, nn.Module, int]:
    """(image sketcher, text sketcher, flat sketch size) from a ``configs/global`` T-EMDE spec."""
    pooling = build_global_pooling(spec, dim)
    if not pooling.is_sketch:
        raise InputError("model.global_pooling", f"VSRN's sketch needs a T-EMDE kind (global=temde...), got "
                         f"{pooling.kind!r}")
    return pooling.image, pooling.text, pooling.dim


class SketchContext(nn.Module):
    """T-EMDE replacement for the region GCN: v_i + BN(W S(v)), S(v) the sketch of the image's regions.

    Like an Rs_GCN block the BatchNorm affine parameters start at zero, so the module starts as the identity;
    its cost is linear in the number of regions (the GCN's relation matrix is quadratic, its 4x4 projections
    dominate at D = 2048).
    """

    def __init__(self, dim: int, sketcher: nn.Module, sketch_dim: int) -> None:
        super().__init__()
        self.sketcher = sketcher
        self.proj = nn.Linear(sketch_dim, dim)
        self.bn = nn.BatchNorm1d(dim)
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, v: Tensor, mask: Tensor | None = None) -> Tensor:
        context = self.bn(self.proj(sketch_vector(self.sketcher, v, mask)))
        out = v + context[:, None, :]
        return out if mask is None else out * mask[..., None].to(out.dtype)


class VSRNImageEncoder(nn.Module):
    """images (B, N, F), mask (B, N) -> (embedding (B, D) unit norm, regions V* (B, N, D), their mask).

    With a mask, valid regions are moved first (stable order) and the returned mask follows that order
    (``None`` when every region is valid, the official case).
    """

    def __init__(self, img_dim: int, embed_size: int, variant: str, reasoning: nn.Module) -> None:
        super().__init__()
        _check_choice("variant", variant, VARIANTS)
        self.variant = variant
        self.fc = nn.Linear(img_dim, embed_size)
        self.reasoning = reasoning
        self.img_rnn = nn.GRU(embed_size, embed_size, 1, batch_first=True)
        # Official F30K path only (commit bf2ac4f): BatchNorm1d on the final image vector. PyTorch >= 1.2 inits
        # its weight to 1 (torch 0.4.1 drew U(0, 1)); this matters only when training from scratch.
        self.bn = nn.BatchNorm1d(embed_size) if variant == "f30k" else None
        # Official init_weights: Xavier-uniform range sqrt(6 / (in + out)) for fc, zero bias.
        bound = math.sqrt(6.0) / math.sqrt(img_dim + embed_size)
        nn.init.uniform_(self.fc.weight, -bound, bound)
        nn.init.zeros_(self.fc.bias)

    def forward(self, images: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        if mask is not None and bool(mask.all()):
            mask = None
        if mask is not None:
            # Valid regions first (stable), so the region GRU reads them in stored order and stops at the last.
            order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
            images = images.gather(1, order[..., None].expand_as(images))
            mask = mask.gather(1, order)
        x = self.fc(images)
        if mask is not None:
            x = x * mask[..., None].to(x.dtype)
        if self.variant == "coco":
            x = l2norm(x, dim=1)  # official COCO path: each channel normalised across the regions
        x = self.reasoning(x, mask)
        regions = l2norm(x, dim=1)  # official GCN_img_emd: again over the region axis
        if mask is None:
            _, hidden = self.img_rnn(regions)
        else:
            lengths = mask.sum(dim=1).clamp(min=1).cpu()
            packed = pack_padded_sequence(regions, lengths, batch_first=True, enforce_sorted=False)
            _, hidden = self.img_rnn(packed)
        features = hidden[-1]
        if self.bn is not None:
            features = self.bn(features)
        return l2norm(features, dim=-1), regions, mask


class VSRN(nn.Module):
    """VSRN retrieval model (+ caption branch for training, + optional T-EMDE)."""

    def __init__(
        self,
        vocab_size: int,
        img_dim: int = 2048,  # official --img_dim
        embed_size: int = 2048,  # official --embed_size
        word_dim: int = 300,  # official --word_dim
        num_layers: int = 1,  # official --num_layers (text GRU)
        variant: str = "f30k",  # "f30k": no fc norm + final BN; "coco": region-axis fc norm, no BN
        num_gcn_blocks: int = 4,  # official Rs_GCN_1..4
        sketch: str = "none",  # "none" (official) | "additive" (+ sketch similarity) | "replace" (sketch for GCN)
        global_pooling: Mapping[str, Any] | None = None,  # T-EMDE spec (configs/global), iff sketch != "none"
        temde_weight: float = 1.0,  # lambda of the additive sketch similarity
        learn_temde_weight: bool = False,
        caption_branch: bool = True,  # official joint training; converted checkpoints have no caption branch
        caption_weight: float = 1.0,  # official loss = L_M + L_G
        max_len: int = MAX_LEN,  # official --max_len
        dim_hidden: int = 512,  # official --dim_hidden
        dim_word: int = 300,  # official --dim_word (caption decoder embedding)
        input_dropout_p: float = 0.2,  # official --input_dropout_p
        duplicate_caption_parameters: bool = False,
        text_encoder: str = "bigru",  # "bigru" (official uni-GRU) | "transformer" (pretrained HF model, not in the paper)
        model_name_or_path: str | None = None,  # with text_encoder="transformer": local dir / cached HF name
        pretrained_lr_scale: float = PRETRAINED_LR_SCALE,  # lr multiplier of the pretrained text weights
    ) -> None:
        """``duplicate_caption_parameters`` reproduces the official optimizer quirk (docs/vsrn.md, "Optimizer quirk"): the caption
        branch parameters appear twice in the list given to Adam and to gradient clipping, so they count twice
        in the clipping norm and get two Adam updates per step (use ``Adam(foreach=False)`` to match torch 0.4).
        """
        super().__init__()
        _check_choice("variant", variant, VARIANTS)
        _check_choice("sketch", sketch, SKETCH_MODES)
        if (sketch == "none") != (global_pooling is None):
            raise InputError("model.sketch", f"sketch={sketch!r} with global_pooling={global_pooling!r}: a T-EMDE "
                             "spec (global=temde...) goes with sketch=additive|replace, and only with them")
        self.variant = variant
        self.sketch = sketch
        self.additive = sketch == "additive"
        self.caption_weight = caption_weight
        self.duplicate_caption_parameters = duplicate_caption_parameters

        if sketch == "replace":
            image_sketcher, _, sketch_dim = _build_sketchers(embed_size, global_pooling)
            reasoning: nn.Module = SketchContext(embed_size, image_sketcher, sketch_dim)
        else:
            reasoning = RegionGCN(embed_size, num_gcn_blocks)
        self.img_enc = VSRNImageEncoder(img_dim, embed_size, variant, reasoning)
        self.text_encoder = check_text_encoder(text_encoder, model_name_or_path)
        self.pretrained_lr_scale = pretrained_lr_scale
        if text_encoder == "transformer":  # token states -> projection; caption vector = their masked mean
            self.txt_enc: nn.Module = TransformerTextEncoder(str(model_name_or_path), embed_size, normalize=False)
        else:
            self.txt_enc = VSRNTextEncoder(vocab_size, word_dim, embed_size, num_layers)

        if self.additive:
            self.image_sketcher, self.text_sketcher, _ = _build_sketchers(embed_size, global_pooling)
            weight = torch.tensor(float(temde_weight))
            if learn_temde_weight:
                self.temde_weight = nn.Parameter(weight)
            else:
                self.register_buffer("temde_weight", weight)

        self.caption = (
            CaptionGenerator(vocab_size, embed_size, dim_hidden, dim_word, input_dropout_p, max_len)
            if caption_branch
            else None
        )

    # --- RetrievalModel -------------------------------------------------------------------------------------
    def encode_images(self, images: Tensor, regions_mask: Tensor | None = None) -> Repr:
        embedding, regions, regions_mask = self.img_enc(images, regions_mask)
        out: Repr = {"embedding": embedding}
        if self.additive:
            out["sketch"] = sketch_vector(self.image_sketcher, regions, regions_mask)
        if self.training and self.caption is not None:
            # Only needed by the caption loss; kept out of evaluation galleries (N x 36 x D would be large).
            out["regions"] = regions
            if regions_mask is not None:
                out["regions_mask"] = regions_mask
        return out

    def encode_texts(self, tokens: Tensor, lengths: Tensor) -> Repr:
        if isinstance(self.txt_enc, TransformerTextEncoder):
            states = self.txt_enc(tokens, lengths)
            mask = lengths_to_mask(torch.as_tensor(lengths, device=tokens.device).long(), tokens.shape[1])
            embedding = l2norm(masked_mean(states, mask))
        else:
            embedding, states, mask = self.txt_enc(tokens, lengths)
        out: Repr = {"embedding": embedding}
        if self.additive:
            out["sketch"] = sketch_vector(self.text_sketcher, states, mask)
        return out

    def similarity(self, img: Repr, txt: Repr) -> Tensor:
        """Cosine of the unit-norm embeddings (+ lambda * sketch cosine): one matrix product per block."""
        scores = img["embedding"] @ txt["embedding"].t()
        if self.additive:
            scores = scores + self.temde_weight * (img["sketch"] @ txt["sketch"].t())
        return scores

    # --- optional training hooks -----------------------------------------------------------------------------
    def auxiliary_losses(self, batch: dict[str, Tensor], img: Repr, txt: Repr) -> dict[str, Tensor]:
        """Caption-generation loss L_G on the batch's (image, caption) rows; empty outside training."""
        if self.caption is None or "regions" not in img:
            return {}
        loss = self.caption.loss(img["regions"], batch["tokens"], batch["lengths"], img.get("regions_mask"))
        return {"caption": self.caption_weight * loss}

    def optimizer_parameters(self) -> list[Tensor] | list[dict[str, Any]]:
        """All parameters; with ``duplicate_caption_parameters`` the caption branch is listed a second time;
        with a transformer text encoder, two groups (pretrained weights at ``pretrained_lr_scale`` x lr)."""
        params = list(self.parameters())
        duplicates = list(self.caption.parameters()) if self.duplicate_caption_parameters and self.caption else []
        if isinstance(self.txt_enc, TransformerTextEncoder):  # pretrained weights at pretrained_lr_scale x lr
            return param_groups(self, self.txt_enc.pretrained_parameters(), self.pretrained_lr_scale, duplicates)
        return params + duplicates
