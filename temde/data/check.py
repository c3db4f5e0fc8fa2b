"""``python -m temde.data.check <root>``: verify a downloaded (or generated) SCAN precomp tree, one table.

For every dataset under ``<root>`` (``f30k_precomp``, ``coco_precomp``, and any other ``*_precomp`` folder such
as the synthetic one): every expected file is there; each split passes :func:`temde.data.validate.check_split`
(float (N, R, F), finite values, UTF-8 captions, caption count and layout); the image counts equal the known
Karpathy/SCAN split sizes; all splits share one feature width; the vocabulary loads, its ids are 0..N-1, and it
covers the words of the captions. Exit status 0 when everything is right, 1 when a row says FAIL, 2 when the
root itself is unusable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from temde.data.precomp import load_captions
from temde.data.tokenize import tokenize
from temde.data.validate import SplitInfo, check_split, check_widths
from temde.data.vocab import UNK, Vocabulary, load_vocab
from temde.errors import EXIT_BAD_INPUT, InputError

# Images per split in the SCAN precomp release (Karpathy splits); docs: data/README.md.
KNOWN_SPLITS: dict[str, dict[str, int]] = {
    "f30k_precomp": {"train": 29000, "dev": 1014, "test": 1000},
    "coco_precomp": {"train": 113287, "dev": 5000, "testall": 5000},
}
OPTIONAL_SPLITS = {"coco_precomp": {"test": 1000}}  # shipped by SCAN, not used by the paper rows
COVERAGE_SAMPLE = 2000  # captions per split tokenized for the vocabulary-coverage row
MIN_COVERAGE = 0.5  # below this, the vocabulary almost surely belongs to other data


@dataclass
class Row:
    dataset: str
    split: str
    check: str
    ok: bool | None  # None: skipped / informational
    detail: str


def _splits_on_disk(directory: Path) -> list[str]:
    names = {p.name[: -len("_ims.npy")] for p in directory.glob("*_ims.npy")}
    names |= {p.name[: -len("_caps.txt")] for p in directory.glob("*_caps.txt")}
    return sorted(names)


def _error_text(err: InputError) -> str:
    return " ".join(str(err).split())


def _vocab_rows(root: Path, name: str, infos: list[SplitInfo]) -> list[Row]:
    path = root / "vocab" / f"{name}_vocab.json"
    if not path.is_file():
        return [Row(name, "-", "vocabulary", None, f"{path} absent: training builds one from the train captions")]
    try:
        vocab = load_vocab(path)
    except InputError as err:
        return [Row(name, "-", "vocabulary", False, _error_text(err))]
    rows = []
    ids = sorted(vocab.word2idx.values())
    contiguous = ids == list(range(len(ids)))
    rows.append(Row(name, "-", "vocabulary", contiguous,
                    f"{path.name}: {len(vocab)} words" + ("" if contiguous else "; ids are not 0..N-1")))
    for info in infos:
        rows.append(_coverage_row(name, info, vocab))
    return rows


def _coverage_row(name: str, info: SplitInfo, vocab: Vocabulary) -> Row:
    captions = load_captions(info.captions_path)
    step = max(1, len(captions) // COVERAGE_SAMPLE)
    tokens = [t for caption in captions[::step] for t in tokenize(caption)]
    known = sum(vocab(t) != vocab.word2idx[UNK] for t in tokens) / max(1, len(tokens))
    ok = known >= MIN_COVERAGE
    detail = f"{known:.1%} of caption words in the vocabulary ({len(tokens)} words sampled)"
    if not ok:
        detail += f"; expected >= {MIN_COVERAGE:.0%}: is this the vocabulary of {name}?"
    return Row(name, info.split, "vocab coverage", ok, detail)


def check_dataset(root: Path, name: str, values: bool = True) -> list[Row]:
    """All rows for one dataset folder."""
    directory = root / name
    known = KNOWN_SPLITS.get(name, {})
    optional = OPTIONAL_SPLITS.get(name, {})
    if not directory.is_dir():
        return [Row(name, "-", "folder", False, f"{directory} does not exist")]
    on_disk = _splits_on_disk(directory)
    splits = list(dict.fromkeys([*known, *(s for s in on_disk if s in optional or not known)]))
    if not splits:
        return [Row(name, "-", "folder", False, f"{directory} holds no <split>_ims.npy / <split>_caps.txt files")]
    rows, infos = [], []
    for split in splits:
        try:
            info = check_split(root, name, split, values=values)
        except InputError as err:
            rows.append(Row(name, split, "files", False, _error_text(err)))
            continue
        infos.append(info)
        rows.append(Row(name, split, "files", True,
                        f"({info.n_rows}, {info.n_regions}, {info.feature_dim}) {info.dtype}, {info.n_captions} "
                        f"captions, {info.layout} layout" + (", all values finite" if values else "")))
        expected = known.get(split, optional.get(split))
        if expected is not None:
            rows.append(Row(name, split, "images", info.n_images == expected,
                            f"{info.n_images} images" + ("" if info.n_images == expected
                                                         else f"; expected {expected} (SCAN {name} {split})")))
    try:
        check_widths(infos)
        if infos:
            rows.append(Row(name, "-", "feature width", True, f"{infos[0].feature_dim} in every split"))
    except InputError as err:
        rows.append(Row(name, "-", "feature width", False, _error_text(err)))
    rows.extend(_vocab_rows(root, name, infos))
    return rows


def check_tree(root: str | Path, datasets: Iterable[str] | None = None, values: bool = True) -> list[Row]:
    """Rows for the given datasets, or for every ``*_precomp`` folder under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "data root does not exist; expected a folder with f30k_precomp/, coco_precomp/ "
                               "and vocab/ (see data/README.md)")
    names = list(datasets) if datasets else sorted(p.name for p in root.iterdir()
                                                   if p.is_dir() and p.name.endswith("_precomp"))
    if not names:
        raise InputError(root, "holds no *_precomp dataset folder; expected f30k_precomp/ or coco_precomp/ "
                               "(see data/README.md)")
    return [row for name in names for row in check_dataset(root, name, values)]


def format_table(rows: list[Row]) -> str:
    header = ("dataset", "split", "check", "status", "detail")
    cells = [(r.dataset, r.split, r.check, {True: "ok", False: "FAIL", None: "-"}[r.ok], r.detail) for r in rows]
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(4)]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(4)) + "  " + c[4] for c in [header, *cells]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m temde.data.check", description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="data root holding <name>_precomp/ folders and vocab/")
    parser.add_argument("--dataset", action="append", help="check only this dataset folder (repeatable)")
    parser.add_argument("--shapes-only", action="store_true", help="skip the NaN/Inf and repeated-row scans")
    args = parser.parse_args(argv)
    try:
        rows = check_tree(args.root, args.dataset, values=not args.shapes_only)
    except InputError as err:
        print(err.one_line(), file=sys.stderr)
        return EXIT_BAD_INPUT
    print(format_table(rows))
    failed = [r for r in rows if r.ok is False]
    print(f"\n{len(failed)} problem(s) found" if failed else "\nall checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
