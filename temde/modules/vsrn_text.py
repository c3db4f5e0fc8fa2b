"""VSRN text encoder (official ``EncoderText``): word embedding -> uni-GRU -> last valid state -> L2 norm.

Besides the caption vector it returns the per-word GRU states and their mask, which T-EMDE sketches.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from temde.modules.norms import l2norm_clamped, lengths_to_mask
from temde.modules.text import EMBED_INIT_RANGE  # official VSRN EncoderText.init_weights: U(-0.1, 0.1) too


class VSRNTextEncoder(nn.Module):
    """tokens (B, L) incl. <start>/<end> -> (embedding (B, D) unit norm, states (B, L, D), mask (B, L))."""

    def __init__(self, vocab_size: int, word_dim: int = 300, embed_size: int = 2048, num_layers: int = 1) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, word_dim)
        self.rnn = nn.GRU(word_dim, embed_size, num_layers, batch_first=True)
        nn.init.uniform_(self.embed.weight, -EMBED_INIT_RANGE, EMBED_INIT_RANGE)

    def forward(self, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        lengths = torch.as_tensor(lengths, device=tokens.device).long()
        if lengths.numel() and int(lengths.min()) < 1:
            raise ValueError("VSRNTextEncoder: every caption needs length >= 1 (it includes <start>/<end>)")
        width = tokens.shape[1]
        packed = pack_padded_sequence(self.embed(tokens), lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, hidden = self.rnn(packed)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=width)
        # The last layer's final hidden state is the output at position length-1 (official gather).
        return l2norm_clamped(hidden[-1]), states, lengths_to_mask(lengths, width)
