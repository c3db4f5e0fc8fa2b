"""Hostile checkpoints of every layout the loaders accept: nothing in a file can make a loader run code.

Each payload would create a marker file if anything executed it; every case must leave no marker and raise a
one-line InputError naming the file.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from temde.checkpoint import (
    FORMAT,
    build_model,
    checkpoint_vocabulary,
    load_model,
    read_resume_checkpoint,
    save_model,
)
from temde.convert import load_official
from temde.errors import InputError

TINY = {"_target_": "temde.models.baseline.MeanPoolBaseline", "vocab_size": 10, "img_dim": 6, "embed_size": 4,
        "word_dim": 3}
WORDS = {"<pad>": 0, "<start>": 1, "<end>": 2, "<unk>": 3, "a": 4}


class _Exploit:
    """Pickles as a call to os.system creating the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _ours(path: Path, config: dict, state: dict | None = None, **extra) -> Path:
    torch.save({"format": FORMAT, "model_config": config, "state_dict": state or {}, "word2idx": None, "meta": {},
                **extra}, path)
    return path


def _hostile_files(tmp: Path, marker: Path) -> dict[str, Path]:
    cmd = f"touch {marker}"
    good_state = build_model(TINY).state_dict()
    files = {
        "target_os_system": _ours(tmp / "a.ckpt", {"_target_": "os.system", "_args_": [cmd]}),
        "target_builtins_eval": _ours(tmp / "b.ckpt", {"_target_": "builtins.eval", "_args_": [
            f"__import__('os').system('{cmd}')"]}),
        "nested_target_in_kwargs": _ours(tmp / "c.ckpt", {**TINY, "word_dim": {"_target_": "os.system",
                                                                            "_args_": [cmd]}}, good_state),
        "unknown_kwarg": _ours(tmp / "d.ckpt", {**TINY, "_recursive_": True, "x": 1}, good_state),
        "non_plain_value": _ours(tmp / "e.ckpt", {**TINY, "word_dim": torch.tensor(3)}, good_state),
        "pickled_global": tmp / "f.ckpt",
        "pickled_global_legacy": tmp / "g.ckpt",
        "raw_pickle": tmp / "h.ckpt",
        "lightning_layout": tmp / "i.ckpt",
        "lightning_pickled_hparams": tmp / "j.ckpt",
    }
    torch.save({"format": FORMAT, "model_config": TINY, "state_dict": good_state, "x": _Exploit(marker)},
               files["pickled_global"])
    torch.save({"format": FORMAT, "model_config": TINY, "x": _Exploit(marker)}, files["pickled_global_legacy"],
               _use_new_zipfile_serialization=False)
    files["raw_pickle"].write_bytes(pickle.dumps({"format": FORMAT, "model_config": _Exploit(marker)}, protocol=2))
    torch.save({"hyper_parameters": {"model_config": {"_target_": "os.system", "_args_": [cmd]}},
                "state_dict": {}, "epoch": 0}, files["lightning_layout"])
    torch.save({"hyper_parameters": {"model_config": TINY, "x": _Exploit(marker)},
                "state_dict": {f"model.{k}": v for k, v in good_state.items()}}, files["lightning_pickled_hparams"])
    return files


def test_no_layout_runs_code(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    for case, path in _hostile_files(tmp_path, marker).items():
        for loader in (load_model, read_resume_checkpoint):
            with pytest.raises(InputError) as err:
                loader(path)
            message = err.value.one_line()
            assert "\n" not in message and str(path) in message, (case, message)
            assert not marker.exists(), f"{case} ran code through {loader.__name__}"
        with pytest.raises(InputError):  # the converters refuse the same files with the same safe loader
            load_official("sgraf", path)
        with pytest.raises(InputError):
            load_official("vsrn", path)
        assert not marker.exists(), case


def test_messages_say_what_was_wrong(tmp_path: Path) -> None:
    files = _hostile_files(tmp_path, tmp_path / "PWNED")
    expect = {
        "target_os_system": "_target_ is 'os.system'; expected one of the project's model classes",
        "nested_target_in_kwargs": "model_config.word_dim contains '_target_'",
        "unknown_kwarg": r"'_recursive_', which is not an argument of temde\.models\.baseline\.MeanPoolBaseline",
        "non_plain_value": "model_config.word_dim is a Tensor; expected a plain value",
        "pickled_global": r"names a Python object \((posix|os|nt)\.system\) outside the allowed",
        "raw_pickle": "names a Python object",
        "lightning_pickled_hparams": "names a Python object",
    }
    for case, text in expect.items():
        with pytest.raises(InputError, match=text):
            load_model(files[case])


def test_truncated_checkpoint_is_called_truncated(tmp_path: Path) -> None:
    good = save_model(tmp_path / "model_best.ckpt", build_model(TINY), TINY, WORDS)
    model, payload = load_model(good)
    assert payload["word2idx"] == WORDS and not model.training
    data = good.read_bytes()
    for size in (0, 10, len(data) // 2, len(data) - 30):
        cut = tmp_path / f"cut{size}.ckpt"
        cut.write_bytes(data[:size])
        with pytest.raises(InputError, match="truncated or corrupt") as err:
            load_model(cut)
        assert "must be converted" not in str(err.value) and str(cut) in str(err.value)
        with pytest.raises(InputError, match="truncated or corrupt"):  # a cut last.ckpt given as ckpt_path
            read_resume_checkpoint(cut)
    assert zipfile.is_zipfile(good)


def test_save_is_atomic_and_never_writes_a_refused_config(tmp_path: Path, monkeypatch) -> None:
    path = save_model(tmp_path / "m.ckpt", build_model(TINY), TINY, WORDS)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt  # an interrupt mid-write

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_model(path, build_model(TINY), TINY, {})
    monkeypatch.undo()
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.ckpt"]
    with pytest.raises(InputError, match="expected one of the project's model classes"):
        save_model(tmp_path / "x.ckpt", build_model(TINY), {**TINY, "_target_": "os.system"})
    assert not (tmp_path / "x.ckpt").exists()


def test_vocabulary_travels_with_the_checkpoint(tmp_path: Path) -> None:
    stored = {"format": FORMAT, "model_config": TINY, "word2idx": WORDS}
    assert checkpoint_vocabulary("m.ckpt", stored) == WORDS
    assert checkpoint_vocabulary("m.ckpt", stored, dict(WORDS), "v.json") == WORDS
    other = {**WORDS, "b": 5}
    with pytest.raises(InputError, match=r"m.ckpt: its stored vocabulary \(5 words\) differs from v.json \(6 words"):
        checkpoint_vocabulary("m.ckpt", stored, other, "v.json")
    needs = {"format": FORMAT, "model_config": TINY, "word2idx": None}
    with pytest.raises(InputError, match="carries no vocabulary.*--vocab"):
        checkpoint_vocabulary("m.ckpt", needs)
    assert checkpoint_vocabulary("m.ckpt", needs, other, "v.json") == other
    too_big = {w: i for i, w in enumerate([*WORDS, *"bcdefgh"])}  # ids up to 11, model has 10 rows
    with pytest.raises(InputError, match="expected every id < 10"):
        checkpoint_vocabulary("m.ckpt", needs, too_big, "v.json")
    path = save_model(tmp_path / "big.ckpt", build_model(TINY), TINY, too_big)
    with pytest.raises(InputError, match="big.ckpt.*ids up to 11 but the model has 10 embedding rows"):
        load_model(path)


def test_resume_requires_a_lightning_checkpoint(tmp_path: Path) -> None:
    path = save_model(tmp_path / "model_best.ckpt", build_model(TINY), TINY, WORDS)
    with pytest.raises(InputError, match="expected a Lightning training checkpoint"):
        read_resume_checkpoint(path)
    state = {f"model.{k}": v for k, v in build_model(TINY).state_dict().items()}
    torch.save({"hyper_parameters": {"model_config": TINY}, "state_dict": state, "word2idx": WORDS, "epoch": 3,
                "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3}]}]}, tmp_path / "last.ckpt")
    payload = read_resume_checkpoint(tmp_path / "last.ckpt")
    assert payload["format"] == "lightning" and payload["meta"]["epoch"] == 3
    model, _ = load_model(tmp_path / "last.ckpt")
    assert all(torch.equal(v, state[f"model.{k}"]) for k, v in model.state_dict().items())
