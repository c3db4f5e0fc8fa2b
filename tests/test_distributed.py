"""DDP helpers: gathered contrastive loss and sharded evaluation, single process, simulated ranks, and 2 gloo ranks."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from temde.distributed import all_gather_repr, gather_eval_parts
from temde.losses import ContrastiveLoss, GatheredContrastiveLoss, contrastive_over_blocks
from temde.retrieval import blocked_similarity, shard_blocks


class _Dot(torch.nn.Module):
    """Tiny model with a ragged text repr: similarity = <image vector, masked mean of word vectors>."""

    def similarity(self, img, txt):
        words = (txt["words"] * txt["mask"].unsqueeze(-1)).sum(1) / txt["mask"].sum(1, keepdim=True)
        return img["emb"] @ words.t()


def _reprs(n_img: int, n_txt: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 6, (n_txt,), generator=g)
    mask = torch.arange(5)[None] < lengths[:, None]
    return ({"emb": torch.randn(n_img, 4, generator=g)},
            {"words": torch.randn(n_txt, 5, 4, generator=g), "mask": mask})


@pytest.mark.parametrize("hardest", [True, False])
def test_loss_over_simulated_ranks_sums_to_the_full_batch_loss(hardest):
    scores = torch.randn(12, 12, generator=torch.Generator().manual_seed(1))
    full = ContrastiveLoss(0.2, hardest)(scores)
    for world_size in (1, 2, 3, 4):
        b = 12 // world_size
        total = sum(contrastive_over_blocks(scores[r * b:(r + 1) * b], scores[:, r * b:(r + 1) * b], r * b, 0.2,
                                            hardest) for r in range(world_size))
        torch.testing.assert_close(total, full)


def test_gathered_loss_with_one_process_is_the_plain_loss():
    img, txt = _reprs(6, 6)
    loss = GatheredContrastiveLoss(margin=0.2)
    scores = _Dot().similarity(img, txt)
    torch.testing.assert_close(loss.forward_reprs(_Dot().similarity, img, txt), ContrastiveLoss(0.2)(scores))
    assert all_gather_repr(img) == (img, 0)


@pytest.mark.parametrize("world_size", [1, 2, 3, 5])
def test_sharded_similarity_blocks_partition_the_matrix(world_size):
    img, txt = _reprs(7, 11)
    model = _Dot()
    full = blocked_similarity(model, img, txt, 3, 4, progress=False)
    blocks = [shard_blocks(7, 11, 3, 4, r, world_size) for r in range(world_size)]
    flat = [b for bs in blocks for b in bs]
    assert len(flat) == len(set(flat)) == 3 * 3 and max(map(len, blocks)) - min(map(len, blocks)) <= 1
    parts = [blocked_similarity(model, img, txt, 3, 4, progress=False, rank=r, world_size=world_size,
                                gather=False)
             for r in range(world_size)]
    torch.testing.assert_close(sum(parts), full)
    torch.testing.assert_close(blocked_similarity(model, img, txt, 3, 4, progress=False), full)  # world size 1
    with pytest.raises(ValueError, match="rank"):
        shard_blocks(7, 11, 3, 4, world_size, world_size)


def test_gather_eval_parts_drops_padding_repeats():
    img, _ = _reprs(5, 1)
    parts = [(torch.tensor([3, 0]), {"emb": img["emb"][[3, 0]]}),
             (torch.tensor([4, 1, 2, 3]), {"emb": img["emb"][[4, 1, 2, 3]]})]  # 3 repeated, as a padded shard
    [(index, rep)] = gather_eval_parts(parts)
    assert index.tolist() == [0, 1, 2, 3, 4]
    torch.testing.assert_close(rep["emb"], img["emb"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    img, txt = _reprs(8, 8, seed=4)
    img["emb"].requires_grad_(True)
    b = 8 // world_size
    local_img = {"emb": img["emb"][rank * b:(rank + 1) * b]}
    words = txt["words"][rank * b:(rank + 1) * b]
    mask = txt["mask"][rank * b:(rank + 1) * b]
    width = int(mask.sum(1).max())  # ragged: each rank trims its own captions
    local_txt = {"words": words[:, :width], "mask": mask[:, :width]}
    loss = GatheredContrastiveLoss(0.2).forward_reprs(_Dot().similarity, local_img, local_txt)
    loss.backward()
    dist.all_reduce(loss.detach())
    grad = img["emb"].grad.clone()
    dist.all_reduce(grad)  # each rank's gradient lives on its own rows; sum = what DDP would see in total
    sims = blocked_similarity(_Dot(), {"emb": img["emb"].detach()}, txt, 3, 3, progress=False)
    # numpy arrays travel by value: a torch tensor would travel as a shared-memory handle that vanishes when this
    # worker exits before the parent has read it (FileNotFoundError on a loaded machine)
    queue.put((rank, float(loss), grad.numpy(), sims.numpy()))
    dist.destroy_process_group()


def test_two_gloo_ranks_match_the_single_process_full_batch():
    world_size, ctx = 2, mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, world_size, port, queue)) for r in range(world_size)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=240)  # generous: CI machines may be slow to tear down gloo
        assert p.exitcode == 0
    img, txt = _reprs(8, 8, seed=4)
    img["emb"].requires_grad_(True)
    full = ContrastiveLoss(0.2)(_Dot().similarity(img, txt))
    full.backward()
    expected_sims = _Dot().similarity({"emb": img["emb"].detach()}, txt)
    for _, loss, grad, sims in results:
        grad, sims = torch.from_numpy(grad), torch.from_numpy(sims)
        assert loss == pytest.approx(full.item(), rel=1e-5)
        torch.testing.assert_close(grad, img["emb"].grad, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(sims, expected_sims)
