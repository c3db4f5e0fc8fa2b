"""Multi-device helpers for ``trainer=ddp``: the contrastive loss over features gathered from every device, and
evaluation that shards the (images x captions) similarity blocks across devices.

Why the gather matters: VSE++/SGRAF/VSRN train with the *hardest* negative in the batch. Under plain DDP each
device only sees its own ``data.batch_size`` items, so the hardest negative is per device. With
``loss._target_=temde.distributed.GatheredContrastiveLoss`` (and the ``forward_reprs`` hook in the training
step) every local query is scored against the captions/images of *all* devices: the negative pool is the global
batch. Gradients flow back to the device that produced each feature (``all_gather_with_grad``).

Everything degrades to the single-process behaviour when ``torch.distributed`` is not initialised (world size
1), and the pure parts (block assignment, the loss over (rows, columns) blocks) take explicit ``rank`` /
``world_size`` so tests can simulate ranks in one process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from temde.losses import ContrastiveLoss
from temde.models.base import Repr, concat_reprs, index_repr, repr_len, to_device
from temde.retrieval import blocked_similarity, shard_blocks  # noqa: F401 - shard_blocks re-exported

Part = tuple[Tensor, Repr]  # (dataset indices, encoded batch)


def world() -> tuple[int, int]:
    """(rank, world_size); (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# ------------------------------------------------------------------------------------------------- gathering
class _AllGather(torch.autograd.Function):
    """all_gather of equally-shaped tensors whose backward returns this rank's share of the summed gradient.

    Each rank's loss depends on every rank's features; summing the incoming gradients over ranks
    (all_reduce) and keeping the local slice gives d(sum of all ranks' losses)/d(local features).
    """

    @staticmethod
    def forward(ctx, tensor: Tensor) -> tuple[Tensor, ...]:
        out = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(out, tensor.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads: Tensor) -> Tensor:
        stacked = torch.stack([g.contiguous() for g in grads])
        dist.all_reduce(stacked)
        return stacked[dist.get_rank()]


def all_gather_with_grad(tensor: Tensor) -> list[Tensor]:
    """One tensor per rank, possibly of different sizes in any dimension (padded for transport, then cut)."""
    _, size = world()
    if size == 1:
        return [tensor]
    shape = torch.tensor(tensor.shape, device=tensor.device)
    shapes = [torch.empty_like(shape) for _ in range(size)]
    dist.all_gather(shapes, shape)
    shapes_l = [tuple(int(x) for x in s) for s in shapes]
    max_shape = [max(s[d] for s in shapes_l) for d in range(tensor.dim())]
    pad = []
    for d in reversed(range(tensor.dim())):
        pad += [0, max_shape[d] - tensor.shape[d]]
    padded = torch.nn.functional.pad(tensor, pad) if any(pad) else tensor
    gathered = _AllGather.apply(padded)
    return [g[tuple(slice(0, n) for n in s)] for g, s in zip(gathered, shapes_l)]


def all_gather_repr(rep: Repr) -> tuple[Repr, int]:
    """Concatenate a batch representation over ranks (ragged dim 1 zero-padded, masks padded False).

    Returns (gathered repr, offset of this rank's rows in it). Bool masks travel as uint8 (no gradient).
    """
    rank, size = world()
    if size == 1:
        return rep, 0
    per_rank: list[dict[str, Tensor]] = [{} for _ in range(size)]
    for key, value in rep.items():
        as_bool = value.dtype == torch.bool
        parts = all_gather_with_grad(value.to(torch.uint8) if as_bool else value)
        for r, part in enumerate(parts):
            per_rank[r][key] = part.bool() if as_bool else part
    offset = sum(repr_len(per_rank[r]) for r in range(rank))
    return concat_reprs(per_rank), offset


# ----------------------------------------------------------------------------------------------------- loss
def contrastive_over_blocks(
    i2t: Tensor, t2i: Tensor, offset: int, margin: float = 0.2, hardest: bool = True
) -> Tensor:
    """VSE++ hinge for this rank's b queries against the global batch of B items.

    ``i2t``: (b, B) scores of the local images vs all captions; ``t2i``: (B, b) scores of all images vs the
    local captions; the positives are at global position ``offset + i``. Summed over ranks this equals
    :class:`~temde.losses.ContrastiveLoss` on the full (B, B) matrix.
    """
    b = i2t.shape[0]
    rows = torch.arange(b, device=i2t.device)
    cols = rows + offset
    pos_img = i2t[rows, cols].view(-1, 1)  # score of local image i with its caption
    pos_txt = t2i[cols, rows].view(1, -1)  # score of local caption j with its image
    cost_caption = (margin + i2t - pos_img).clamp(min=0)
    cost_image = (margin + t2i - pos_txt).clamp(min=0)
    mask_c = torch.zeros_like(cost_caption, dtype=torch.bool)
    mask_c[rows, cols] = True
    mask_i = torch.zeros_like(cost_image, dtype=torch.bool)
    mask_i[cols, rows] = True
    cost_caption = cost_caption.masked_fill(mask_c, 0)
    cost_image = cost_image.masked_fill(mask_i, 0)
    if hardest:
        return cost_caption.max(dim=1).values.sum() + cost_image.max(dim=0).values.sum()
    return cost_caption.sum() + cost_image.sum()


class GatheredContrastiveLoss(ContrastiveLoss):
    """:class:`~temde.losses.ContrastiveLoss` whose negatives come from every device under DDP.

    ``forward(scores)`` is the plain per-device loss (what a training step without the hook computes);
    ``forward_reprs(similarity, img, txt)`` gathers the encoded batch from all ranks and scores local images vs
    all captions and all images vs local captions ((b x B) + (B x b) pairs instead of b x b: for cross-attention
    models that is 2 x world_size times the similarity work of a step). With one process it equals ``forward``.
    """

    def forward_reprs(self, similarity: Callable[[Repr, Repr], Tensor], img: Repr, txt: Repr) -> Tensor:
        _, size = world()
        if size == 1:
            return self(similarity(img, txt))
        all_img, offset = all_gather_repr(img)
        all_txt, _ = all_gather_repr(txt)
        hardest = self.max_violation and getattr(self, "epoch", 0) >= getattr(self, "warmup_epochs", 0)
        return contrastive_over_blocks(similarity(img, all_txt), similarity(all_img, txt), offset,
                                       self.margin, hardest)


# ------------------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def sharded_blocked_similarity(
    model,
    img: Repr,
    txt: Repr,
    img_block: int = 128,
    txt_block: int = 128,
    device: str | torch.device = "cpu",
    rank: int | None = None,
    world_size: int | None = None,
    gather: bool = True,
) -> Tensor:
    """(n_img, n_txt) float32 similarities with the blocks split across ranks (cross-attention models: the
    evaluation cost is n_img x n_txt pair scores, so N devices take ~1/N of the time).

    Every rank needs the full encoded ``img`` / ``txt`` (cheap: encoding is linear in items). Each rank fills
    its own blocks of a zero matrix; with ``gather`` the ranks' disjoint blocks are summed (all_reduce), so
    every rank returns the full matrix. ``rank`` / ``world_size`` default to the process group; passing them
    with ``gather=False`` simulates one rank (tests).
    """
    r0, w0 = world()
    rank = r0 if rank is None else rank
    world_size = w0 if world_size is None else world_size
    sims = blocked_similarity(model, img, txt, img_block, txt_block, device, progress=False, rank=rank,
                              world_size=world_size)
    if gather and w0 > 1:
        on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        sims = sims.to(on)
        dist.all_reduce(sims)
        sims = sims.cpu()
    return sims


def gather_eval_parts(parts: Sequence[Part]) -> list[Part]:
    """Validation under DDP: every rank encoded a shard of the dev items (DistributedSampler pads shards with
    repeated items). Collect all ranks' (index, repr) parts on every rank and drop the repeats, so the
    metrics are computed on exactly the dev set. One process: the parts, de-duplicated."""
    _, size = world()
    local = [(idx.cpu(), to_device(rep, "cpu")) for idx, rep in parts]
    if size > 1:
        everything: list[list[Part] | None] = [None] * size
        dist.all_gather_object(everything, local)
        local = [p for rank_parts in everything for p in rank_parts]
    if not local:
        return []
    index = torch.cat([p[0] for p in local])
    rep = concat_reprs([p[1] for p in local])
    order = torch.argsort(index, stable=True)
    keep = torch.ones_like(order, dtype=torch.bool)
    keep[1:] = index[order][1:] != index[order][:-1]
    chosen = order[keep]
    return [(index[chosen], index_repr(rep, chosen))]
