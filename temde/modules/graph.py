"""SGR: similarity graph reasoning over the alignment nodes of one (image, caption) pair.

Nodes are the global alignment vector (node 0) followed by one local alignment vector per word. One step::

    E = softmax((W_q S)(W_k S)^T)      # over neighbour nodes; no 1/sqrt(d) scaling (official)
    S = ReLU(W_g (E S))                # aggregates the *unprojected* S

Padded word nodes are masked out as neighbours, so every valid node sees exactly the graph the official
per-caption code builds on ``L_i + 1`` nodes. Linear names match the official checkpoint keys.

Only node 0 is read out after the last step, and each node's update depends on its own row of ``E`` alone, so
the last step is computed for node 0 only (same result, ~1/5 fewer FLOPs for 3 steps); query and key
projections share one matmul.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from temde.modules.init import xavier_linears_


class GraphReasoning(nn.Module):
    """One SGR step on node features (..., n, d) with an optional node mask (..., n) bool."""

    def __init__(self, sim_dim: int) -> None:
        super().__init__()
        self.graph_query_w = nn.Linear(sim_dim, sim_dim)
        self.graph_key_w = nn.Linear(sim_dim, sim_dim)
        self.sim_graph_w = nn.Linear(sim_dim, sim_dim)
        self.relu = nn.ReLU()
        xavier_linears_(self)

    def forward(self, nodes: Tensor, mask: Tensor | None = None, first_node_only: bool = False) -> Tensor:
        """Updated nodes (..., n, d); with ``first_node_only`` just the updated node 0, (..., 1, d)."""
        d = nodes.shape[-1]
        if first_node_only:
            query = self.graph_query_w(nodes[..., :1, :])
            key = self.graph_key_w(nodes)
        else:  # one matmul for both projections
            weight = torch.cat([self.graph_query_w.weight, self.graph_key_w.weight], dim=0)
            bias = torch.cat([self.graph_query_w.bias, self.graph_key_w.bias], dim=0)
            query, key = F.linear(nodes, weight, bias).split(d, dim=-1)
        edges = torch.matmul(query, key.transpose(-1, -2))  # (..., n or 1, n), no 1/sqrt(d): official
        if mask is not None:
            edges = edges.masked_fill(~mask.unsqueeze(-2), float("-inf"))
        edges = torch.softmax(edges, dim=-1)
        out = self.sim_graph_w(torch.matmul(edges, nodes))
        return out.relu_() if not torch.is_grad_enabled() else self.relu(out)


class SimilarityGraph(nn.ModuleList):
    """``steps`` stacked :class:`GraphReasoning` layers (separate weights); returns node 0 (not normalised).

    A ``ModuleList`` so the checkpoint keys read ``SGR_module.{k}.graph_query_w.weight`` as in the official model.
    """

    def __init__(self, sim_dim: int, steps: int = 3) -> None:
        super().__init__([GraphReasoning(sim_dim) for _ in range(steps)])

    def forward(self, nodes: Tensor, mask: Tensor | None = None) -> Tensor:
        last = len(self) - 1
        for k, layer in enumerate(self):
            nodes = layer(nodes, mask, first_node_only=k == last)
        return nodes[..., 0, :]
