"""Collectives for ``trainer=ddp``, and nothing else: gathering encoded batches with gradients (the negatives of
:class:`temde.losses.GatheredContrastiveLoss`), summing sharded similarity blocks
(:func:`temde.retrieval.blocked_similarity`) and collecting validation parts.

Everything degrades to the single-process behaviour when ``torch.distributed`` is not initialised (world size
1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from temde.repr import Repr, concat_reprs, index_repr, repr_len, to_device

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


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum a CPU tensor over ranks (on the GPU under NCCL) and return it on CPU; identity without a group."""
    _, size = world()
    if size == 1:
        return t
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    out = t.to(on)
    dist.all_reduce(out)
    return out.cpu()


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
