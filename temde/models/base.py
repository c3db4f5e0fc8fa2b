"""The one interface every retrieval model implements.

Training, evaluation, ensembling, two-stage retrieval and checkpoint conversion talk only to
:class:`RetrievalModel`, so a new backbone is one file plus one config. Representations (:data:`Repr`) and their
helpers live in :mod:`temde.repr`; scoring whole galleries in :mod:`temde.retrieval`.

A model may declare ``similarity_defaults`` (a class attribute, e.g. ``{"txt_block": 512}``): block sizes that
suit its cost per pair, which :func:`temde.retrieval.blocked_similarity` uses unless the caller sets them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

from temde.repr import Repr


@runtime_checkable
class RetrievalModel(Protocol):
    """Encode each modality independently, then score every (image, caption) pair."""

    def encode_images(self, images: Tensor, regions_mask: Tensor | None = None) -> Repr:
        """images (N, R, F) float, regions_mask (N, R) bool or None (all valid)."""
        ...

    def encode_texts(self, tokens: Tensor, lengths: Tensor) -> Repr:
        """tokens (M, L) long incl. <start>/<end>, zero padded; lengths (M,) long."""
        ...

    def similarity(self, img: Repr, txt: Repr) -> Tensor:
        """All pairs: returns (n_img, n_txt). Cross-attention models score pairs; embedding models matmul."""
        ...
