"""A synthetic world written in the exact SCAN precomp on-disk format (design: docs/synthetic.md).

Why: Flickr30K/COCO features cannot be downloaded everywhere (CI, laptops), yet the real loading, training and
evaluation code must run end to end, on data hard enough that a worse model looks worse: attribute binding,
counts, spatial relations carried by box channels, synonyms, partial captions, confusable classes and distractor
regions, at an ``easy`` (unit tests) or ``standard`` (default) level.
"""

from temde.data.synthetic.spec import LEVELS, N_BOX_CHANNELS, Level, SyntheticSpec
from temde.data.synthetic.writer import check_manifest, ensure_synthetic_dataset, write_synthetic_dataset

__all__ = ["LEVELS", "N_BOX_CHANNELS", "Level", "SyntheticSpec", "check_manifest", "ensure_synthetic_dataset",
           "write_synthetic_dataset"]
