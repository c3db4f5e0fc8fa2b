"""Weight initialisation shared by the SGRAF-style modules."""

from __future__ import annotations

from torch import nn


def xavier_linears_(module: nn.Module) -> nn.Module:
    """Xavier-uniform every ``nn.Linear`` inside ``module`` and zero its bias; BatchNorms get weight 1, bias 0.

    The official SGRAF ``init_weights`` uses ``U(-r, r)`` with ``r = sqrt(6) / sqrt(fan_in + fan_out)``, which is
    exactly ``nn.init.xavier_uniform_`` with gain 1.
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module
