"""Model-agnostic scoring of whole galleries: the one code path from items to a similarity matrix.

The official SGRAF/VSRN evaluation loops over captions one at a time and caches embeddings per caption in
float64. Here each modality is encoded once per item and the (n_images, n_captions) matrix is filled block by
block, so peak memory is set by the block sizes, never by n_images x n_captions x tokens.

:func:`split_similarity` (raw regions and token ids in) = :func:`encode_images` + :func:`encode_texts` +
:func:`blocked_similarity` (encoded galleries in). Evaluation, validation, reproduction, two-stage retrieval and
the benchmarks all go through :func:`blocked_similarity`, which also splits the blocks over DDP ranks and applies
the scoring precision (``eval.precision``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from temde.distributed import all_reduce_sum, world
from temde.errors import InputError
from temde.models.base import RetrievalModel
from temde.repr import Repr, concat_reprs, repr_len, slice_repr, to_device

DEFAULT_BLOCK = 128  # images (or captions) per block when neither the caller nor the model says otherwise
PRECISIONS = ("fp32", "tf32", "bf16")


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


def block_sizes(model: Any, img_block: int | None = None, txt_block: int | None = None) -> tuple[int, int]:
    """The caller's block sizes, else the model's ``similarity_defaults``, else :data:`DEFAULT_BLOCK`."""
    defaults = getattr(model, "similarity_defaults", {}) or {}
    img = img_block if img_block is not None else defaults.get("img_block", DEFAULT_BLOCK)
    txt = txt_block if txt_block is not None else defaults.get("txt_block", DEFAULT_BLOCK)
    if int(img) < 1 or int(txt) < 1:
        raise InputError("eval.img_block/eval.txt_block", f"positive block sizes, got {img} x {txt}")
    return int(img), int(txt)


@contextmanager
def scoring_precision(precision: str, device: str | torch.device) -> Iterator[None]:
    """``fp32`` (TF32 off), ``tf32`` (TF32 matmuls on CUDA; CPU matmuls stay fp32) or ``bf16`` (autocast);
    the previous backend flags are restored afterwards."""
    if precision not in PRECISIONS:
        raise InputError("eval.precision", f"one of {'|'.join(PRECISIONS)}, got {precision!r}")
    device_type = torch.device(device).type
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        if precision == "bf16":
            with torch.autocast(device_type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@torch.no_grad()
def blocked_similarity(
    model: RetrievalModel,
    img: Repr,
    txt: Repr,
    img_block: int | None = None,
    txt_block: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    progress: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
    gather: bool = True,
    precision: str = "fp32",
) -> Tensor:
    """Fill the (n_img, n_txt) float32 matrix with ``model.similarity`` on image x caption blocks.

    Under DDP (``rank``/``world_size`` default to the process group; (0, 1) without one) each rank scores its
    round-robin share of the blocks (:func:`shard_blocks`) and, with ``gather``, the ranks' disjoint blocks are
    summed so every rank returns the full matrix; ``gather=False`` returns this rank's share only (zeros
    elsewhere: tests simulate ranks this way). Cross-attention models cost n_img x n_txt pair scores, so N
    devices take ~1/N of the time; every rank needs the full encoded galleries (encoding is linear in items).
    """
    r0, w0 = world()
    rank = r0 if rank is None else rank
    world_size = w0 if world_size is None else world_size
    img_block, txt_block = block_sizes(model, img_block, txt_block)
    n_img, n_txt = repr_len(img), repr_len(txt)
    sims = torch.zeros(n_img, n_txt, dtype=torch.float32)
    blocks = shard_blocks(n_img, n_txt, img_block, txt_block, rank, world_size)
    with scoring_precision(precision, device):
        for i, j in tqdm(blocks, desc="similarity blocks", disable=not progress, leave=False):
            img_b = to_device(slice_repr(img, i, i + img_block), device, dtype)
            txt_b = to_device(slice_repr(txt, j, j + txt_block), device, dtype)
            sims[i : i + img_block, j : j + txt_block] = model.similarity(img_b, txt_b).float().cpu()
    if gather and w0 > 1 and world_size > 1:
        sims = all_reduce_sum(sims)
    return sims


@torch.no_grad()
def split_similarity(
    model: nn.Module,
    images: Tensor,
    tokens: Tensor,
    lengths: Tensor,
    img_block: int | None = None,
    txt_block: int | None = None,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    progress: bool = False,
) -> Tensor:
    """(n_images, n_captions) similarities of one split from raw regions (N, R, F) and token ids (M, L):
    encode each image and caption once, then :func:`blocked_similarity`. Runs in eval mode (the model's previous
    mode is restored); block sizes default to the model's ``similarity_defaults``."""
    was_training = model.training
    model.eval().to(device)
    try:
        img = encode_images(model, images, batch_size, device)
        txt = encode_texts(model, tokens, lengths, batch_size, device)
        return blocked_similarity(model, img, txt, img_block, txt_block, device, progress=progress,
                                  precision=precision)
    finally:
        model.train(was_training)
