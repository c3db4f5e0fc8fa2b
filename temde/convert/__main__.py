"""``python -m temde.convert {sgraf|vsrn} <official.pth.tar> <out.ckpt> [--vocab VOCAB]``

Reads an official checkpoint safely (no arbitrary unpickling), builds our model with the checkpoint's options,
and writes a temde checkpoint (``temde.checkpoint.save_model``, atomically: an existing ``out`` is replaced
only by a complete file) that ``python -m temde.evaluate`` loads. Pass the vocabulary the checkpoint was
trained with (``vocab/f30k_precomp_vocab.json`` / ``coco_precomp_vocab.json`` / VSRN ``.pkl``) to store it
alongside the weights; its size is checked against the checkpoint. Without ``--vocab`` the checkpoint records
that it needs one, and evaluation refuses to guess it from the data. Bad input: one line, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from temde.checkpoint import save_model
from temde.convert import KINDS, convert_official
from temde.convert.sgraf import official_meta
from temde.data.vocab import load_vocab
from temde.errors import EXIT_BAD_INPUT, InputError


def _load_word2idx(path: str | None) -> dict[str, int] | None:
    """Vocabulary file (SCAN JSON or VSRN pickle, via ``temde.data.vocab.load_vocab``) -> word2idx."""
    return None if path is None else dict(load_vocab(path).word2idx)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m temde.convert", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=KINDS, help="which official code base wrote the checkpoint")
    parser.add_argument("checkpoint", type=Path, help="official model_best.pth.tar")
    parser.add_argument("out", type=Path, help="where to write our checkpoint (.ckpt)")
    parser.add_argument("--vocab", default=None, help="vocabulary JSON the checkpoint was trained with")
    args = parser.parse_args(argv)
    try:
        word2idx = _load_word2idx(args.vocab)  # a bad vocabulary fails before the (larger) checkpoint is read
        model, config = convert_official(args.kind, args.checkpoint, args.vocab)
        if args.out.resolve() == args.checkpoint.resolve():
            raise InputError(args.out, "is the input checkpoint; expected a different output path")
    except InputError as err:
        print(err.one_line(), file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ValueError, FileNotFoundError, TypeError) as err:  # converter checks not yet phrased as InputError
        print("temde: error: " + " ".join(str(err).split()), file=sys.stderr)
        return EXIT_BAD_INPUT
    meta = {"source": str(args.checkpoint), "kind": args.kind, "needs_vocab": word2idx is None}
    if args.kind == "sgraf":
        meta.update(official_meta(args.checkpoint))
    out = save_model(args.out, model, config, word2idx, meta)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: {config['_target_']} ({n_params:,} parameters), vocab "
          f"{'stored' if word2idx is not None else 'NOT stored: evaluation needs vocab=<file> (or re-convert with --vocab)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
