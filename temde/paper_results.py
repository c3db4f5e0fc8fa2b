"""Reported paper numbers (``experiments/paper_results.yaml``) as typed rows, for tables and plots.

Keys of :meth:`PaperRow.metrics` match :func:`temde.evaluation.retrieval_metrics`, so "ours vs paper" is a
dict-to-dict comparison. Values the paper does not report are ``None``, never 0.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from temde.evaluation import RECALL_KEYS

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "experiments" / "paper_results.yaml"
PROTOCOLS = ("f30k_test", "coco_1k_fold5", "coco_5k")  # F30K 1K test; COCO 1K (5 folds); COCO 5K (docs/evaluation.md, "Protocol")
SOURCES = ("sgraf_paper", "sgraf_readme", "temde_paper", "vsrn_paper", "third_party")


@dataclass(frozen=True)
class PaperRow:
    """One reported table row."""

    name: str
    reference: str
    source: str
    model: str
    ensemble: bool
    dataset: str
    protocol: str
    i2t_r1: float | None
    i2t_r5: float | None
    i2t_r10: float | None
    t2i_r1: float | None
    t2i_r5: float | None
    t2i_r10: float | None
    rsum: float | None
    rsum_computed: bool

    def metrics(self) -> dict[str, float | None]:
        """Six recalls + rsum, keyed like ``retrieval_metrics``."""
        return {k: getattr(self, k) for k in (*RECALL_KEYS, "rsum")}


def load_paper_results(path: str | Path | None = None) -> list[PaperRow]:
    """All rows in file order; validates field names, protocols and sources."""
    path = Path(path) if path is not None else DEFAULT_PATH
    if not path.is_file():
        raise FileNotFoundError(f"{path}: paper results yaml not found")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ValueError(f"{path}: expected a mapping with a 'rows' list")
    names = {f.name for f in fields(PaperRow)}
    rows = []
    for i, raw in enumerate(data["rows"]):
        if set(raw) != names:
            raise ValueError(f"{path}: row {i} keys {sorted(raw)} differ from expected {sorted(names)}")
        row = PaperRow(**raw)
        if row.protocol not in PROTOCOLS:
            raise ValueError(f"{path}: row {i} protocol {row.protocol!r}, expected one of {PROTOCOLS}")
        if row.source not in SOURCES:
            raise ValueError(f"{path}: row {i} source {row.source!r}, expected one of {SOURCES}")
        rows.append(row)
    return rows


def paper_rows(
    protocol: str | None = None,
    model: str | None = None,
    source: str | None = None,
    ensemble: bool | None = None,
    path: str | Path | None = None,
) -> list[PaperRow]:
    """Rows filtered by table/protocol, model, source and ensemble flag (``None`` = any)."""
    if protocol is not None and protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}, expected one of {PROTOCOLS}")
    return [
        r
        for r in load_paper_results(path)
        if (protocol is None or r.protocol == protocol)
        and (model is None or r.model == model)
        and (source is None or r.source == source)
        and (ensemble is None or r.ensemble == ensemble)
    ]


def paper_row(protocol: str, model: str, source: str, path: str | Path | None = None) -> PaperRow:
    """Exactly one row (e.g. ``paper_row("coco_5k", "TEMDE+SGR", "temde_paper")``)."""
    rows = paper_rows(protocol, model, source, path=path)
    if len(rows) != 1:
        raise KeyError(f"expected one row for {protocol}/{model}/{source}, found {len(rows)}")
    return rows[0]
