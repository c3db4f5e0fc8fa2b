"""Official SGRAF checkpoints (written here from random weights with the exact official format, docs/sgraf.md) load
safely, strictly and completely, score like the reference, and convert to a checkpoint our loader reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sgraf_official_format import official_opt, official_state_dicts, reference_similarities

from temde.checkpoint import load_model
from temde.convert import load_official
from temde.convert.__main__ import main as convert_main
from temde.convert.sgraf import PREFIXES, convert_sgraf
from temde.errors import InputError
from temde.retrieval import split_similarity

DIMS = dict(vocab_size=30, img_dim=20, word_dim=10, embed_size=12, sim_dim=6)
UNPICKLED: list[str] = []


class _Payload:
    """Would record its own unpickling; a safe loader must refuse it before that happens."""

    def __setstate__(self, state: dict) -> None:
        UNPICKLED.append("executed")


def _write(tmp_path: Path, module_name: str = "SGR", sds=None, opt_overrides=None, extra=None) -> Path:
    sds = sds if sds is not None else official_state_dicts(module_name=module_name, **DIMS)
    opt = official_opt(module_name=module_name, **DIMS)
    for k, v in (opt_overrides or {}).items():
        setattr(opt, k, v)
    ckpt = {"epoch": 12, "model": sds, "best_rsum": np.float64(401.5), "opt": opt, "Eiters": 13596}
    ckpt.update(extra or {})
    path = tmp_path / f"{module_name}_model_best.pth.tar"
    torch.save(ckpt, path)
    return path


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(4, 36, DIMS["img_dim"], generator=g)
    lengths = torch.tensor([5, 9, 2, 7, 3, 9])
    tokens = torch.randint(4, DIMS["vocab_size"], (6, 9), generator=g)
    tokens[torch.arange(9)[None] >= lengths[:, None]] = 0
    return images, tokens, lengths


@pytest.mark.parametrize("module_name", ["SGR", "SAF"])
def test_load_official_complete_strict_and_equal_to_reference(tmp_path: Path, module_name: str) -> None:
    sds = official_state_dicts(module_name=module_name, **DIMS)
    path = _write(tmp_path, module_name, sds)
    model = load_official("sgraf", path)
    assert not model.training and model.module_name == module_name
    flat = {f"{p}.{k}": v for p, sd in zip(PREFIXES, sds) for k, v in sd.items()}
    ours = model.state_dict()
    assert set(ours) == set(flat)  # the mapping is complete in both directions
    assert all(torch.equal(ours[k], flat[k]) for k in flat)
    images, tokens, lengths = _inputs()
    sims = split_similarity(model, images, tokens, lengths)
    assert sims.shape == (4, 6)
    ref = reference_similarities(sds, images, tokens, lengths, module_name).float()
    assert (sims - ref).abs().max() <= 1e-5


def test_cli_writes_checkpoint_that_load_model_reads(tmp_path: Path) -> None:
    path = _write(tmp_path, "SAF")
    vocab = {"<pad>": 0, "<start>": 1, "<end>": 2, "<unk>": 3} | {f"w{i}": i for i in range(4, DIMS["vocab_size"])}
    vocab_path = tmp_path / "vocab.json"
    vocab_path.write_text(json.dumps({"word2idx": vocab, "idx2word": {str(v): k for k, v in vocab.items()},
                                      "idx": len(vocab)}))
    out = tmp_path / "out" / "saf.ckpt"
    assert convert_main(["sgraf", str(path), str(out), "--vocab", str(vocab_path)]) == 0
    model, payload = load_model(out)
    assert payload["word2idx"] == vocab
    assert payload["model_config"]["module_name"] == "SAF" and payload["meta"]["epoch"] == 12
    assert payload["meta"]["best_rsum"] == pytest.approx(401.5)
    images, tokens, lengths = _inputs()
    direct = split_similarity(load_official("sgraf", path), images, tokens, lengths)
    assert torch.equal(split_similarity(model, images, tokens, lengths), direct)


def test_wrong_vocab_size_is_a_clear_error(tmp_path: Path) -> None:
    path = _write(tmp_path)
    with pytest.raises(ValueError, match="vocabulary size mismatch"):
        convert_sgraf(path, vocab={f"w{i}": i for i in range(DIMS["vocab_size"] + 3)})
    bad_opt = _write(tmp_path, opt_overrides={"vocab_size": DIMS["vocab_size"] + 1})
    with pytest.raises(ValueError, match="embed.weight has 30 rows"):
        convert_sgraf(bad_opt)


def test_mismatched_keys_are_reported(tmp_path: Path) -> None:
    sds = official_state_dicts(**DIMS)
    sds[2]["SGR_module.0.graph_query.weight"] = sds[2].pop("SGR_module.0.graph_query_w.weight")
    path = _write(tmp_path, sds=sds)
    with pytest.raises(ValueError, match=r"missing keys \['sim_enc.SGR_module.0.graph_query_w.weight'\]"):
        load_official("sgraf", path)
    sds = official_state_dicts(**DIMS)
    sds[0]["fc.extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unexpected keys"):
        load_official("sgraf", _write(tmp_path, sds=sds))
    sds = official_state_dicts(**DIMS)
    sds[2]["sim_tranloc_w.weight"] = torch.zeros(DIMS["sim_dim"] + 1, DIMS["embed_size"])
    with pytest.raises(ValueError, match="shape mismatches"):
        load_official("sgraf", _write(tmp_path, sds=sds))
    with pytest.raises(ValueError, match="list of 3 state dicts"):
        load_official("sgraf", _write(tmp_path, sds=official_state_dicts(**DIMS)[:2]))


def test_no_arbitrary_unpickling(tmp_path: Path) -> None:
    path = _write(tmp_path, extra={"payload": _Payload()})
    with pytest.raises(ValueError, match="without unpickling code"):
        load_official("sgraf", path)
    assert UNPICKLED == []
    with pytest.raises(InputError, match="missing.pth.tar.*file not found"):
        load_official("sgraf", tmp_path / "missing.pth.tar")
    not_official = tmp_path / "plain.pth"
    torch.save({"state_dict": {}}, not_official)
    with pytest.raises(ValueError, match="'model' and 'opt'"):
        load_official("sgraf", not_official)
