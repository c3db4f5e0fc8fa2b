"""SGRAF's word encoder: embedding -> dropout -> (bi-)GRU -> mean of directions -> l2norm."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from temde.modules.norms import l2norm

EMBED_INIT_RANGE = 0.1  # official: word embedding initialised U(-0.1, 0.1)
WORD_DROPOUT = 0.4  # official: dropout 0.4 on the word embeddings


class GRUTextEncoder(nn.Module):
    """Token ids (B, L) + lengths (B,) -> word features (B, L, embed_size), padded rows exactly zero.

    The bidirectional GRU's two directions are averaged (not concatenated), as in the official model, and the
    GRU keeps PyTorch's default init. Submodule names (``embed``, ``cap_rnn``) match the official checkpoint.
    Sequences need not be sorted (``enforce_sorted=False``).
    """

    def __init__(
        self,
        vocab_size: int,
        word_dim: int = 300,
        embed_size: int = 1024,
        num_layers: int = 1,
        bi_gru: bool = True,
        dropout: float = WORD_DROPOUT,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.embed_size = embed_size
        self.bi_gru = bi_gru
        self.normalize = normalize
        self.embed = nn.Embedding(vocab_size, word_dim)
        self.dropout = nn.Dropout(dropout)
        self.cap_rnn = nn.GRU(word_dim, embed_size, num_layers, batch_first=True, bidirectional=bi_gru)
        nn.init.uniform_(self.embed.weight, -EMBED_INIT_RANGE, EMBED_INIT_RANGE)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (B, L) ids, got shape {tuple(tokens.shape)}")
        lengths = torch.as_tensor(lengths, dtype=torch.long)
        if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > tokens.shape[1]):
            raise ValueError(f"lengths must lie in [1, {tokens.shape[1]}], got {lengths.tolist()}")
        emb = self.dropout(self.embed(tokens))
        packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.cap_rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])
        if self.bi_gru:
            out = (out[..., : self.embed_size] + out[..., self.embed_size :]) / 2
        return l2norm(out, dim=-1) if self.normalize else out
