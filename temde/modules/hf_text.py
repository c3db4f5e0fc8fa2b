"""Pretrained Hugging Face text encoder (``text_encoder=transformer``), an alternative to the bi-GRU.

Why: VSE-infinity (Chen et al., CVPR 2021) shows a BERT text encoder beats the GRU on the same bottom-up region
features (Flickr30K rsum 513.5 vs 498.1). Beyond the SGRAF/VSRN/T-EMDE papers, which all use GRUs.

Token ids (B, L) + lengths (B,) -> token states (B, L, embed_size): the transformer's last hidden states
through a linear projection to the joint space. The attention mask is ``arange(L) < lengths`` (captions are
tokenized contiguously, :mod:`temde.data.hf_tokenizer`); padded positions get the model's pad id and their
output rows are zero, as the GRU's are. T-EMDE sketches these token states like it sketches GRU states.
Weights are loaded from local files only (:mod:`temde.pretrained`); ``pretrained_parameters`` lets the model
give them their own (smaller) learning rate.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import AutoModel

from temde.modules.norms import l2norm, lengths_to_mask
from temde.pretrained import resolve_pretrained

TEXT_ENCODERS = ("bigru", "transformer")
# The usual fine-tuning rate of a pretrained encoder relative to the freshly initialised layers (VSE-infinity).
PRETRAINED_LR_SCALE = 0.1


class TransformerTextEncoder(nn.Module):
    """Pretrained transformer + projection. ``normalize``: l2-normalise each token state (SGRAF's words are)."""

    def __init__(self, model_name_or_path: str, embed_size: int, normalize: bool = True) -> None:
        super().__init__()
        self.embed_size = embed_size
        self.normalize = normalize
        self.transformer = AutoModel.from_pretrained(
            resolve_pretrained(model_name_or_path), local_files_only=True, trust_remote_code=False
        )
        pad = getattr(self.transformer.config, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else 0
        self.proj = nn.Linear(self.transformer.config.hidden_size, embed_size)
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def pretrained_parameters(self) -> list[nn.Parameter]:
        return list(self.transformer.parameters())

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (B, L) ids, got shape {tuple(tokens.shape)}")
        lengths = torch.as_tensor(lengths, dtype=torch.long, device=tokens.device)
        if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > tokens.shape[1]):
            raise ValueError(f"lengths must lie in [1, {tokens.shape[1]}], got {lengths.tolist()}")
        width = int(lengths.max()) if lengths.numel() else tokens.shape[1]
        mask = lengths_to_mask(lengths, width)
        ids = tokens[:, :width].masked_fill(~mask, self.pad_id)
        states = self.transformer(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        out = self.proj(states)
        if self.normalize:
            out = l2norm(out, dim=-1)
        out = out * mask[..., None].to(out.dtype)
        if width < tokens.shape[1]:  # keep the (B, L) layout of the input
            out = torch.cat([out, out.new_zeros(out.shape[0], tokens.shape[1] - width, out.shape[2])], dim=1)
        return out


def param_groups(model: nn.Module, pretrained: list[nn.Parameter], lr_scale: float,
                 extra: list[nn.Parameter] | None = None) -> list[dict]:
    """Two Adam groups: the pretrained weights at ``lr_scale`` x lr, everything else (plus ``extra``) at lr."""
    ids = {id(p) for p in pretrained}
    rest = [p for p in model.parameters() if id(p) not in ids and p.requires_grad]
    return [{"params": [p for p in pretrained if p.requires_grad], "lr_scale": lr_scale,
             "name": "pretrained_text"},
            {"params": rest + list(extra or []), "lr_scale": 1.0, "name": "main"}]


def check_text_encoder(text_encoder: str, model_name_or_path: str | None) -> str:
    """Validate the ``text_encoder`` option of a model constructor."""
    if text_encoder not in TEXT_ENCODERS:
        raise ValueError(f"text_encoder must be one of {TEXT_ENCODERS}, got {text_encoder!r}")
    if text_encoder == "transformer" and not model_name_or_path:
        raise ValueError("text_encoder=transformer needs model_name_or_path (a local HF model directory or name)")
    return text_encoder
