"""The synthetic world (docs/synthetic.md): every designed property is checked in the written files (easy level),
and the manifest makes an interrupted or mixed regeneration impossible to accept."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from temde.data.synthetic import (
    N_BOX_CHANNELS,
    SyntheticSpec,
    check_manifest,
    ensure_synthetic_dataset,
    write_synthetic_dataset,
)
from temde.data.synthetic import writer as writer_module
from temde.data.synthetic.captions import COUNT_WORDS, plural
from temde.data.synthetic.probe import keyword_scores
from temde.data.synthetic.world import (
    CLASS_FAMILY,
    CLASSES,
    COLORS,
    SCENES,
    class_frequencies,
    prototypes,
    regions_per_instance,
)
from temde.errors import InputError
from temde.evaluation import retrieval_metrics

SPEC = SyntheticSpec(n_train=120, n_dev=10, n_test=120, n_testall=10, n_regions=36, feature_dim=40,
                     difficulty="easy", seed=5)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("syn"), "synthetic_precomp", SPEC, progress=False)


def _split(d: Path, split: str) -> tuple[np.ndarray, list[list[str]], list[dict]]:
    feats = np.load(d / f"{split}_ims.npy")
    caps = (d / f"{split}_caps.txt").read_text().splitlines()
    return feats, [caps[5 * i: 5 * i + 5] for i in range(len(feats))], json.loads((d / f"{split}_world.json").read_text())


def _words(caption: str) -> list[str]:
    return re.findall(r"[a-z]+", caption.lower())


def _mentioned(caption: str, group: dict) -> bool:
    names = CLASSES[group["class"]]
    words = set(_words(caption))
    return any(n in words or plural(n) in words for n in names)


def test_swapped_bindings_give_identical_word_multisets_for_different_images(world):
    feats, caps, meta = _split(world, "test")
    twins = [(m["twin"]["of"], i) for i, m in enumerate(meta) if m["twin"] and m["twin"]["kind"] == "binding"]
    assert twins, "the test split has binding twins"
    identical = 0
    for a, b in twins:
        for ca, cb in zip(caps[a], caps[b]):
            if Counter(_words(ca)) == Counter(_words(cb)) and ca != cb:
                identical += 1  # same words, different order of colours: only the binding tells them apart
    assert identical >= 3
    # and the images differ exactly in the regions of the two swapped groups, in the content channels only
    for a, b in twins:
        i, j = meta[b]["twin"]["groups"]
        owner = np.array(meta[a]["region_owner"])
        assert owner.tolist() == meta[b]["region_owner"]
        differs = np.abs(feats[a] - feats[b]).max(axis=1) > 0
        assert np.array_equal(differs, np.isin(owner, [i, j]))
        assert np.array_equal(feats[a][:, -N_BOX_CHANNELS:], feats[b][:, -N_BOX_CHANNELS:])
        ga, gb = meta[a]["groups"], meta[b]["groups"]
        assert (ga[i]["color"], ga[j]["color"]) == (gb[j]["color"], gb[i]["color"]) != (gb[i]["color"], gb[j]["color"])


def test_relation_twins_differ_only_in_the_boxes_of_the_swapped_groups(world):
    feats, caps, meta = _split(world, "test")
    twins = [(m["twin"]["of"], i) for i, m in enumerate(meta) if m["twin"] and m["twin"]["kind"] == "relation"]
    assert twins
    relation_words = {"left", "right", "above", "below", "over", "under", "beneath"}
    same_words_with_relation = 0
    for a, b in twins:
        i, j = meta[b]["twin"]["groups"]
        owner = np.array(meta[a]["region_owner"])
        content = np.abs(feats[a][:, :-N_BOX_CHANNELS] - feats[b][:, :-N_BOX_CHANNELS]).max(axis=1)
        boxes = np.abs(feats[a][:, -N_BOX_CHANNELS:] - feats[b][:, -N_BOX_CHANNELS:]).max(axis=1)
        assert not content.any()
        assert np.array_equal(boxes > 0, np.isin(owner, [i, j]))
        for ca, cb in zip(caps[a], caps[b]):
            if ca != cb and Counter(_words(ca)) == Counter(_words(cb)) and relation_words & set(_words(ca)):
                same_words_with_relation += 1  # "a dog left of a cat" / "a cat left of a dog"
    assert same_words_with_relation >= 1


def test_boxes_counts_and_relations_are_carried_by_the_regions(world):
    feats, caps, meta = _split(world, "train")
    rpi = regions_per_instance(SPEC)
    scale = SPEC.level.box_scale
    left_ok = left_total = 0
    for f, image_caps, m in zip(feats, caps, meta):
        owner = np.array(m["region_owner"])
        boxes = f[:, -N_BOX_CHANNELS:] / scale
        assert np.all(boxes >= 0) and np.all(boxes <= 1)
        assert np.allclose(boxes[:, 4], (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), atol=1e-5)
        for g, group in enumerate(m["groups"]):
            mine = boxes[owner == g]
            assert len(mine) == group["count"] * rpi  # counts: one set of regions per instance
            centres = (mine[:, :2] + mine[:, 2:4]) / 2
            assert np.abs(centres - np.array(group["center"])).max() < 0.15
        for cap in image_caps:  # "X left of Y": the region boxes of X lie left of Y's
            words = _words(cap)
            named = [g for g, group in enumerate(m["groups"]) if _mentioned(cap, group)]
            if "left" in words and len(named) == 2:
                x = [m["groups"][g]["center"][0] for g in named]
                first = min(named, key=lambda g: min(words.index(w) for w in _names(m["groups"][g]) if w in words))
                left_total += 1
                left_ok += x[named.index(first)] == min(x)
        # counts: a number word in a caption names a group with that many instances
        for cap in image_caps:
            words = set(_words(cap))
            if "three" in words:
                assert any(group["count"] == 3 for group in m["groups"])
    assert left_total >= 5 and left_ok == left_total


def _names(group: dict) -> list[str]:
    return [w for n in CLASSES[group["class"]] for w in (n, plural(n))]


def test_synonyms_partial_captions_distractors_and_confusable_classes(world):
    feats, caps, meta = _split(world, "train")
    text = [w for image_caps in caps for c in image_caps for w in _words(c)]
    used = set(text)
    with_synonyms = [c for c in CLASSES if len(c) > 1 and sum(n in used or plural(n) in used for n in c) >= 2]
    assert len(with_synonyms) >= 10  # several words per concept really occur
    assert {"pair", "some", "two"} <= used and set(COUNT_WORDS[3]) & used
    partial = sum(sum(_mentioned(c, g) for g in m["groups"]) < len(m["groups"])
                  for image_caps, m in zip(caps, meta) for c in image_caps)
    assert 0.2 < partial / (5 * len(meta)) < 0.9  # many captions describe only part of the image
    assert any(-2 in m["region_owner"] for m in meta)  # distractor regions exist ...
    assert used.isdisjoint({"clutter", "distractor"})  # ... and no caption has a word for clutter
    assert not set(COLORS) & {w for w in used if w[0] in "aeiou"}
    # confusable classes: prototypes of one family are closer than those of different families
    protos = prototypes(SPEC)["class"]
    unit = protos / np.linalg.norm(protos, axis=1, keepdims=True)
    cos = unit @ unit.T
    fam = np.array(CLASS_FAMILY)
    same = (fam[:, None] == fam[None]) & ~np.eye(len(fam), dtype=bool)
    assert cos[same].mean() > 0.2 > abs(cos[fam[:, None] != fam[None]].mean())


def test_standard_level_is_harder_and_spec_is_validated():
    easy, standard = SyntheticSpec(difficulty="easy").level, SyntheticSpec().level
    assert SyntheticSpec().difficulty == "standard"
    assert standard.region_noise > easy.region_noise and standard.family_share > easy.family_share
    with pytest.raises(InputError, match="difficulty"):
        SyntheticSpec(difficulty="hard")
    with pytest.raises(InputError, match="feature_dim"):
        SyntheticSpec(feature_dim=4)


def test_standard_level_has_long_tailed_classes_and_sparser_captions(tmp_path):
    """The two properties only the standard level has, measured in written files of equal size at both levels."""
    sizes = dict(n_train=400, n_dev=4, n_test=4, n_testall=5, n_regions=36, feature_dim=12, seed=3)
    stats = {}
    for level in ("easy", "standard"):
        spec = SyntheticSpec(difficulty=level, **sizes)
        d = write_synthetic_dataset(tmp_path / level, "syn", spec, progress=False)
        _, caps, meta = _split(d, "train")
        counts = np.bincount([g["class"] for m in meta for g in m["groups"]], minlength=len(CLASSES))
        p = class_frequencies(spec)
        order = np.argsort(-p)
        mentioned = [sum(_mentioned(c, g) for g in m["groups"]) for image_caps, m in zip(caps, meta) for c in image_caps]
        colours = [sum(w in COLORS for w in _words(c)) for image_caps in caps for c in image_caps]
        flat = [c for image_caps in caps for c in image_caps]
        stats[level] = {"head_to_tail": counts[order[:5]].sum() / max(counts[order[-5:]].sum(), 1),
                        "named_per_caption": np.mean(mentioned), "colours_per_named": sum(colours) / sum(mentioned),
                        "probe_rsum": retrieval_metrics(keyword_scores(meta[:100], flat[:500]))["rsum"]}
        if level == "easy":
            assert np.allclose(p, 1 / len(CLASSES))
    easy, standard = stats["easy"], stats["standard"]
    # Zipf's law: the 5 most probable classes occur many times more often than the 5 least probable ones
    assert standard["head_to_tail"] > 5 > easy["head_to_tail"]
    # captions name fewer groups, and say fewer of their colours
    assert standard["named_per_caption"] < easy["named_per_caption"] - 0.2
    assert standard["colours_per_named"] < easy["colours_per_named"] - 0.15
    # together: the captions of 100 images identify them less well for a model-free keyword matcher
    assert 31.6 < standard["probe_rsum"] < easy["probe_rsum"] - 20


def test_keyword_probe_counts_what_a_caption_names():
    world = [{"scene": 0, "groups": [{"class": 0, "color": 0}, {"class": 1, "color": 1}]},
             {"scene": 1, "groups": [{"class": 0, "color": 1}, {"class": 2, "color": 0}]}]
    dog, cat, red, blue = CLASSES[0][0], CLASSES[1][0], COLORS[0], COLORS[1]
    captions = [f"A {red} {dog} and a {blue} {cat} on the {SCENES[0][0]} .", f"Two {blue} {plural(dog)} ."]
    scores = np.round(keyword_scores(world, captions))
    # image 0: dog, cat, red, blue, (red dog), (blue cat), scene = 7; image 1: dog, red, blue = 3
    # caption 2: dog, blue on both; (blue dog) only on image 1
    assert scores.tolist() == [[7, 2], [3, 3]]


def test_generation_is_deterministic_and_reused_only_when_manifest_matches(tmp_path, world):
    small = SyntheticSpec(n_train=20, n_dev=4, n_test=6, n_testall=5, n_regions=12, feature_dim=16,
                          difficulty="easy", seed=1)
    out = write_synthetic_dataset(tmp_path, "syn", small, progress=False)
    again = write_synthetic_dataset(tmp_path / "b", "syn", small, progress=False)
    for name in ("train_ims.npy", "test_caps.txt", "manifest.json"):
        assert (out / name).read_bytes() == (again / name).read_bytes()
    assert check_manifest(tmp_path, "syn", small) is None
    mtime = (out / "train_ims.npy").stat().st_mtime_ns
    ensure_synthetic_dataset(tmp_path, "syn", small)
    assert (out / "train_ims.npy").stat().st_mtime_ns == mtime  # reused
    other = SyntheticSpec(**{**small.to_dict(), "seed": 2})
    assert "spec" in check_manifest(tmp_path, "syn", other)
    ensure_synthetic_dataset(tmp_path, "syn", other)
    assert check_manifest(tmp_path, "syn", other) is None and not list(tmp_path.glob("syn.*"))


def test_interrupted_regeneration_is_never_accepted_as_mixed(tmp_path, monkeypatch):
    old = SyntheticSpec(n_train=20, n_dev=4, n_test=6, n_testall=5, n_regions=12, feature_dim=16,
                        difficulty="easy", seed=1)
    new = SyntheticSpec(**{**old.to_dict(), "seed": 9})
    out = write_synthetic_dataset(tmp_path, "syn", old, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_write_split = writer_module._write_split

    def crash_on_test(out_dir, split, *args, **kwargs):
        if split == "test":
            raise KeyboardInterrupt  # killed halfway: train and dev of the new spec are already written
        return real_write_split(out_dir, split, *args, **kwargs)

    monkeypatch.setattr(writer_module, "_write_split", crash_on_test)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic_dataset(tmp_path, "syn", new)
    # the published directory is still the complete old dataset, byte for byte; the new spec is not accepted
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert check_manifest(tmp_path, "syn", old) is None
    assert check_manifest(tmp_path, "syn", new) is not None
    monkeypatch.setattr(writer_module, "_write_split", real_write_split)
    # a mixed directory (one split replaced by another dataset's file, as a pre-manifest crash left it) is
    # detected and rebuilt
    other = write_synthetic_dataset(tmp_path / "o", "syn", new, progress=False)
    (out / "dev_ims.npy").write_bytes((other / "dev_ims.npy").read_bytes())
    assert "dev_ims.npy" in check_manifest(tmp_path, "syn", old)
    ensure_synthetic_dataset(tmp_path, "syn", old)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # a truncated file and a stale vocabulary are caught too
    with (out / "train_ims.npy").open("r+b") as f:
        f.truncate(100)
    assert "train_ims.npy" in check_manifest(tmp_path, "syn", old)
    ensure_synthetic_dataset(tmp_path, "syn", old)
    vocab = tmp_path / "vocab" / "syn_vocab.json"
    vocab.write_text(vocab.read_text().replace('"a"', '"b"', 1))
    assert "vocab" in check_manifest(tmp_path, "syn", old)
    ensure_synthetic_dataset(tmp_path, "syn", old)
    assert check_manifest(tmp_path, "syn", old) is None


def test_twin_accuracy_is_chance_for_mean_pooling_and_perfect_for_an_oracle(world):
    from temde.data.synthetic.twins import load_split, twin_accuracy

    meta, captions = load_split(world, "test")
    feats = np.load(world / "test_ims.npy")
    # an oracle that knows which image each caption belongs to
    oracle = np.zeros((len(meta), len(captions)))
    oracle[np.arange(len(captions)) // 5, np.arange(len(captions))] = 1
    acc = twin_accuracy(oracle, meta, captions)
    assert acc["binding"]["accuracy"] == 1.0 and acc["binding"]["captions"] >= 6
    assert acc["relation"]["accuracy"] == 1.0
    # mean pooling of the content channels cannot separate relation twins at all (identical content channels)
    rng = np.random.default_rng(0)
    pooled = np.maximum(feats[:, :, :-N_BOX_CHANNELS], 0).mean(1)
    caption_vectors = rng.standard_normal((len(captions), pooled.shape[1]))
    relation = twin_accuracy(pooled @ caption_vectors.T, meta, captions)["relation"]
    assert relation["accuracy"] == 0.0  # identical content channels: equal scores, never strictly right
