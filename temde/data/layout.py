"""The SCAN "precomp" data layout that every split, metric and script relies on (one home for it).

Flickr30K and MS-COCO splits (SCAN / SGRAF / VSRN releases) store five captions per image, in image order:
captions ``5k .. 5k+4`` describe image ``k`` (docs/sgraf.md, "Data layout"). Retrieval metrics find the ground
truth of caption ``j`` as image ``j // CAPTIONS_PER_IMAGE``.
"""

from __future__ import annotations

CAPTIONS_PER_IMAGE = 5
