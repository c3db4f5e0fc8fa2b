"""``python -m temde.convert {sgraf|vsrn} <official.pth.tar> <out.ckpt> [--vocab VOCAB]``

Reads an official checkpoint safely (no arbitrary unpickling), builds our model with the checkpoint's options,
and writes a temde checkpoint (``temde.checkpoint.save_model``) that ``python -m temde.evaluate`` loads. Pass
the vocabulary JSON the checkpoint was trained with (``vocab/f30k_precomp_vocab.json`` /
``coco_precomp_vocab.json``) to store it alongside the weights; its size is checked against the checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from temde.checkpoint import save_model
from temde.cli import one_line
from temde.convert import KINDS, convert_official
from temde.errors import EXIT_BAD_INPUT


def _load_word2idx(path: str | None) -> dict[str, int] | None:
    """Vocabulary file (SCAN JSON or VSRN pickle, via ``temde.data.vocab.load_vocab``) -> word2idx."""
    if path is None:
        return None
    from temde.data.vocab import load_vocab

    return dict(load_vocab(path).word2idx)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m temde.convert", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=KINDS, help="which official code base wrote the checkpoint")
    parser.add_argument("checkpoint", type=Path, help="official model_best.pth.tar")
    parser.add_argument("out", type=Path, help="where to write our checkpoint (.ckpt)")
    parser.add_argument("--vocab", default=None, help="vocabulary JSON the checkpoint was trained with")
    args = parser.parse_args(argv)
    try:
        model, config = convert_official(args.kind, args.checkpoint, args.vocab)
        word2idx = _load_word2idx(args.vocab)
    except (ValueError, FileNotFoundError, TypeError) as err:  # bad input (InputError is a ValueError)
        print(one_line(err), file=sys.stderr)
        return EXIT_BAD_INPUT
    meta = {"source": str(args.checkpoint), "kind": args.kind}
    if args.kind == "sgraf":
        from temde.convert.sgraf import official_meta

        meta.update(official_meta(args.checkpoint))
    out = save_model(args.out, model, config, word2idx, meta)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: {config['_target_']} ({n_params:,} parameters), vocab "
          f"{'stored' if word2idx is not None else 'not stored (pass --vocab)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
