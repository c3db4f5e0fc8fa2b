"""Model-agnostic scoring of whole galleries: encode once per item, score in bounded blocks.

The official SGRAF/VSRN evaluation loops over captions one at a time and caches embeddings per caption in
float64. Here each modality is encoded once per item and the (n_images, n_captions) matrix is filled block by
block, so peak memory is set by the block sizes, never by n_images x n_captions x tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

from temde.models.base import Repr, RetrievalModel, concat_reprs, repr_len, slice_repr, to_device


@torch.no_grad()
def encode_images(
    model: RetrievalModel, images: Tensor, batch_size: int = 128, device: str | torch.device = "cpu"
) -> Repr:
    """Encode (N, R, F) region features in batches; the result lives on CPU in float32."""
    parts = []
    for start in range(0, images.shape[0], batch_size):
        chunk = torch.as_tensor(images[start : start + batch_size], dtype=torch.float32).to(device)
        parts.append(to_device(model.encode_images(chunk), "cpu", torch.float32))
    return concat_reprs(parts)


@torch.no_grad()
def encode_texts(
    model: RetrievalModel,
    tokens: Tensor,
    lengths: Tensor,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
) -> Repr:
    """Encode (M, L) token ids in batches; each batch is trimmed to its own longest caption."""
    parts = []
    lengths = torch.as_tensor(lengths, dtype=torch.long)
    for start in range(0, tokens.shape[0], batch_size):
        lens = lengths[start : start + batch_size]
        toks = tokens[start : start + batch_size, : int(lens.max())]
        parts.append(to_device(model.encode_texts(toks.to(device), lens.to(device)), "cpu", torch.float32))
    return concat_reprs(parts)


def shard_blocks(n_img: int, n_txt: int, img_block: int, txt_block: int, rank: int = 0, world_size: int = 1
                 ) -> list[tuple[int, int]]:
    """(row, column) starts of the similarity blocks one rank scores: round-robin over all blocks, so every rank
    gets the same amount of work within one block (rank 0 of 1 scores them all)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world of size {world_size}")
    blocks = [(i, j) for i in range(0, n_img, img_block) for j in range(0, n_txt, txt_block)]
    return blocks[rank::world_size]


@torch.no_grad()
def blocked_similarity(
    model: RetrievalModel,
    img: Repr,
    txt: Repr,
    img_block: int = 128,
    txt_block: int = 128,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> Tensor:
    """Fill the (n_img, n_txt) float32 matrix with ``model.similarity`` on image x caption blocks.

    With ``world_size > 1`` only this rank's share of the blocks is filled (the rest stay 0), for
    :func:`temde.distributed.sharded_blocked_similarity` to sum over ranks.
    """
    n_img, n_txt = repr_len(img), repr_len(txt)
    sims = torch.zeros(n_img, n_txt, dtype=torch.float32)
    blocks = shard_blocks(n_img, n_txt, img_block, txt_block, rank, world_size)
    for i, j in tqdm(blocks, desc="similarity blocks", disable=not progress, leave=False):
        img_b = to_device(slice_repr(img, i, i + img_block), device, dtype)
        txt_b = to_device(slice_repr(txt, j, j + txt_block), device, dtype)
        sims[i : i + img_block, j : j + txt_block] = model.similarity(img_b, txt_b).float().cpu()
    return sims


@torch.no_grad()
def similarity_matrix(
    model: RetrievalModel,
    images: Tensor,
    captions: Tensor,
    lengths: Tensor,
    img_block: int = 128,
    txt_block: int = 128,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> Tensor:
    """End to end: raw regions and token ids in, (N, M) similarities out."""
    img = encode_images(model, images, batch_size, device)
    txt = encode_texts(model, captions, lengths, batch_size, device)
    return blocked_similarity(model, img, txt, img_block, txt_block, device, progress=progress)
