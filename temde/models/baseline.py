"""The simplest model behind the common interface: mean-pooled regions vs a GRU caption, cosine similarity.

It exists so the whole pipeline (data, training, evaluation, checkpoints) runs and is tested independently of
SGRAF and VSRN, and as a floor to compare them against.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from temde.repr import Repr


def _l2norm(x: Tensor, dim: int = -1, eps: float = 1e-8) -> Tensor:
    return x / (x.pow(2).sum(dim, keepdim=True).sqrt() + eps)


class MeanPoolBaseline(nn.Module):
    def __init__(self, vocab_size: int, img_dim: int = 2048, embed_size: int = 1024, word_dim: int = 300) -> None:
        super().__init__()
        self.fc = nn.Linear(img_dim, embed_size)
        self.embed = nn.Embedding(vocab_size, word_dim)
        self.rnn = nn.GRU(word_dim, embed_size, batch_first=True)
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)

    def encode_images(self, images: Tensor, regions_mask: Tensor | None = None) -> Repr:
        regions = self.fc(images)
        if regions_mask is None:
            pooled = regions.mean(dim=1)
        else:
            weights = regions_mask.unsqueeze(-1).to(regions.dtype)
            pooled = (regions * weights).sum(1) / weights.sum(1).clamp(min=1)
        return {"embedding": _l2norm(pooled)}

    def encode_texts(self, tokens: Tensor, lengths: Tensor) -> Repr:
        packed = pack_padded_sequence(self.embed(tokens), lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, last = self.rnn(packed)
        return {"embedding": _l2norm(last[-1])}

    def similarity(self, img: Repr, txt: Repr) -> Tensor:
        return img["embedding"] @ txt["embedding"].t()
