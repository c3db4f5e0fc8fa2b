"""Up-front input validation (temde.data.validate) and the data check (temde.data.check), on tiny trees."""

from __future__ import annotations

import shutil
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from temde.data.check import check_tree, format_table
from temde.data.check import main as check_main
from temde.data.precomp import DataError, PrecompDataset
from temde.data.validate import check_finite, check_split, check_vocab_ids, check_widths, validate_run_inputs
from temde.data.vocab import build_vocab, load_vocab
from temde.errors import InputError
from tests.conftest import TINY_SPEC

NAME = "synthetic_precomp"


@pytest.fixture()
def tree(tmp_path: Path, tiny_data_root: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(tiny_data_root, root)
    return root


def _datamodule(root: Path, **kw) -> SimpleNamespace:
    vocab = load_vocab(root / "vocab" / f"{NAME}_vocab.json")
    return SimpleNamespace(root=root, name=NAME, train_split="train", val_split="dev", vocab=vocab,
                           vocab_path=root / "vocab" / f"{NAME}_vocab.json",
                           test_splits={"test": {"split": "test"}, "5fold": {"split": "testall"}}, **kw)


def _model(vocab_size: int, **kw) -> dict:
    return {"_target_": "temde.models.sgraf.SGRAF", "vocab_size": vocab_size, "img_dim": TINY_SPEC.feature_dim,
            "num_region": TINY_SPEC.n_regions, "global_pooling": {"kind": "sa"}, **kw}


def test_good_tree_passes_every_split(tree: Path) -> None:
    dm = _datamodule(tree)
    infos = validate_run_inputs(dm, _model(len(dm.vocab)))
    assert [i.split for i in infos] == ["train", "dev", "test", "testall"]
    assert all(i.values_checked and i.layout == "per-image" for i in infos)
    assert infos[0].n_images == TINY_SPEC.n_train and infos[3].n_rows == TINY_SPEC.n_testall
    assert [i.split for i in validate_run_inputs(dm, train=False)] == ["test", "testall"]
    assert [i.split for i in validate_run_inputs(dm, test=False, mode="shapes")] == ["train", "dev"]


def test_nan_in_the_test_split_is_found_before_training(tree: Path) -> None:
    path = tree / NAME / "testall_ims.npy"
    feats = np.load(path)
    feats[37, 2, 5] = np.nan
    np.save(path, feats)
    with pytest.raises(DataError, match=r"testall_ims.npy: row 37 \(region 2, dim 5\) holds nan; expected finite"):
        validate_run_inputs(_datamodule(tree))
    validate_run_inputs(_datamodule(tree), mode="shapes")  # shapes only: values not read
    with pytest.raises(InputError, match="data.validate: is 'fast'; expected one of"):
        validate_run_inputs(_datamodule(tree), mode="fast")


def test_finite_scan_is_chunked_with_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big_ims.npy"
    big = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(2000, 36, 128))  # 37 MB
    big[:] = 1.0
    big[1999, 35, 127] = np.inf
    big.flush()
    del big
    feats = np.load(path, mmap_mode="r")
    tracemalloc.start()
    with pytest.raises(DataError, match=r"row 1999 \(region 35, dim 127\) holds inf"):
        check_finite(feats, path, chunk_bytes=1 << 20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 << 20, f"peak {peak} bytes for a {feats.nbytes}-byte file"


def test_one_caption_per_image_is_not_read_as_per_caption_layout(tmp_path: Path) -> None:
    d = tmp_path / "x"
    d.mkdir()
    np.save(d / "test_ims.npy", np.arange(10 * 2 * 3, dtype=np.float32).reshape(10, 2, 3))  # 10 distinct rows
    (d / "test_caps.txt").write_text("".join(f"a caption {i}\n" for i in range(10)))
    message = r"10 feature rows for 10 captions \(one row per caption\), but rows 0 and 1 differ; expected rows"
    with pytest.raises(DataError, match=message):
        check_split(tmp_path, "x", "test")
    with pytest.raises(DataError, match=message):  # the loader's cheap probe catches it too
        PrecompDataset(tmp_path, "x", "test", build_vocab([]))
    repeated = np.repeat(np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3), 5, axis=0)
    np.save(d / "test_ims.npy", repeated)
    info = check_split(tmp_path, "x", "test")
    assert info.layout == "per-caption" and info.n_images == 2


def test_bad_captions_name_the_line(tree: Path) -> None:
    path = tree / NAME / "dev_caps.txt"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[6] = b"a caf\xe9 latin-1 caption\n"
    path.write_bytes(b"".join(lines))
    with pytest.raises(DataError, match=r"dev_caps.txt: line 7 is not UTF-8 text"):
        validate_run_inputs(_datamodule(tree))
    path.write_bytes(b"".join(lines[:-1]).replace(b"\xe9", b"e"))  # 99 captions
    with pytest.raises(DataError, match="99 captions is not a multiple of 5"):
        validate_run_inputs(_datamodule(tree))


def test_widths_regions_and_vocabulary_against_the_model(tree: Path) -> None:
    dm = _datamodule(tree)
    with pytest.raises(InputError, match=f"model.img_dim: is 2048 but .*train_ims.npy holds {TINY_SPEC.feature_dim}"):
        validate_run_inputs(dm, _model(len(dm.vocab), img_dim=2048))
    with pytest.raises(InputError, match=f"model.num_region: is 36 but .* has {TINY_SPEC.n_regions} regions"):
        validate_run_inputs(dm, _model(len(dm.vocab), num_region=36))
    validate_run_inputs(dm, _model(len(dm.vocab), num_region=36, global_pooling={"kind": "temde"}))  # no SA: any R
    with pytest.raises(InputError, match=f"vocabulary ids reach {len(dm.vocab) - 1} but the model has 10 embedding"):
        validate_run_inputs(dm, _model(10))
    with pytest.raises(InputError, match="negative id"):
        check_vocab_ids({"a": -1}, None, "v.json")
    path = tree / NAME / "testall_ims.npy"
    np.save(path, np.zeros((TINY_SPEC.n_testall, TINY_SPEC.n_regions, 7), dtype=np.float32))
    with pytest.raises(DataError, match=r"testall_ims.npy: holds 7-d region features but .*train_ims.npy holds 48-d"):
        validate_run_inputs(dm)
    with pytest.raises(DataError):
        check_widths([check_split(tree, NAME, "train"), check_split(tree, NAME, "testall")])


def test_missing_test_split_is_reported_up_front(tree: Path) -> None:
    (tree / NAME / "test_caps.txt").unlink()
    with pytest.raises(DataError, match=r"test_caps.txt: caption file not found"):
        validate_run_inputs(_datamodule(tree))


def test_data_check_all_green_then_names_the_broken_file(tree: Path, capsys) -> None:
    assert check_main([str(tree)]) == 0
    out = capsys.readouterr().out
    assert "all checks passed" in out and "FAIL" not in out and out.count(" ok ") >= 10
    (tree / NAME / "dev_ims.npy").write_bytes(b"\x93NUMPY broken")
    assert check_main([str(tree)]) == 1
    out = capsys.readouterr().out
    fails = [line for line in out.splitlines() if " FAIL " in line]
    assert len(fails) == 1 and "dev_ims.npy" in fails[0] and "truncated or not NumPy" in fails[0]
    assert "1 problem(s) found" in out


def test_data_check_knows_the_official_split_sizes(tmp_path: Path) -> None:
    d = tmp_path / "f30k_precomp"
    d.mkdir()
    for split, n in (("train", 4), ("dev", 3), ("test", 2)):
        np.save(d / f"{split}_ims.npy", np.ones((n, 2, 3), dtype=np.float32))
        (d / f"{split}_caps.txt").write_text("a dog runs\n" * 5 * n)
    rows = check_tree(tmp_path)
    sizes = {r.split: r for r in rows if r.check == "images"}
    assert not sizes["train"].ok and "expected 29000" in sizes["train"].detail
    assert "expected 1014" in sizes["dev"].detail and "expected 1000" in sizes["test"].detail
    assert any(r.check == "vocabulary" and r.ok is None for r in rows)
    assert "FAIL" in format_table(rows)
    (tmp_path / "coco_precomp").mkdir()
    rows = check_tree(tmp_path, ["coco_precomp"])
    assert {r.split for r in rows if r.ok is False} == {"train", "dev", "testall"}  # all three files missing
    with pytest.raises(InputError, match="data root does not exist"):
        check_tree(tmp_path / "nope")
