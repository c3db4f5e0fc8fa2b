"""`python -m temde.data.vocab build` (the BYOD vocabulary command) equals build_vocab and fails in one line."""

from __future__ import annotations

import json

from temde.data.vocab import build_vocab, load_json_vocab, main


def test_build_command_matches_build_vocab(tmp_path, capsys):
    caps = tmp_path / "train_caps.txt"
    caps.write_text("a dog runs\na dog sits\n\nA cat runs.\na dog runs\n")
    out = tmp_path / "vocab" / "mine_vocab.json"
    assert main(["build", str(caps), "--out", str(out), "--min-count", "2"]) == 0
    expected = build_vocab([b"a dog runs", b"a dog sits", b"A cat runs.", b"a dog runs"], min_count=2)
    assert load_json_vocab(out).word2idx == expected.word2idx
    assert set(expected.word2idx) == {"<pad>", "<start>", "<end>", "<unk>", "a", "dog", "runs"}
    assert json.loads(out.read_text())["idx"] == 7 and "7 words" in capsys.readouterr().out


def test_build_command_missing_file_is_one_line(tmp_path, capsys):
    assert main(["build", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "v.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("temde: error: ") and err.count("\n") == 1 and "nope.txt" in err
    assert not (tmp_path / "v.json").exists()
