"""Benchmarks and the scoring they measure: the official baseline is the official computation, the fused SGR
inference equals the layer-by-layer one, chunk sizes follow the device, precision is applied and restored,
the timing protocol interleaves and flags loaded runs, and ``bench_gpu --smoke`` runs end to end."""

from __future__ import annotations

import json
import time

import pytest
import torch
from omegaconf import OmegaConf
from sgraf_official_format import official_state_dicts, reference_similarities

from temde.bench import gpu
from temde.bench.eval_speed import flops_per_pair, random_gallery, random_sgraf
from temde.bench.official import official_scores
from temde.bench.timing import interleaved, publishable, write_json
from temde.errors import InputError
from temde.models.sgraf import GPU_CHUNK, MAX_CHUNK, MIN_CHUNK, SGRAF, auto_chunk_size
from temde.modules.graph import SimilarityGraph
from temde.preflight import check_eval_options
from temde.retrieval import block_sizes, blocked_similarity, encode_images, encode_texts, scoring_precision

pytestmark = pytest.mark.usefixtures("single_thread")
SMALL = dict(vocab_size=40, img_dim=24, word_dim=12, embed_size=16, sim_dim=8)


@pytest.mark.parametrize("module_name", ["SGR", "SAF"])
def test_official_baseline_is_the_official_computation(module_name):
    """The per-caption baseline equals the independent official-semantics reference and our blocked scores."""
    sds = official_state_dicts(module_name=module_name, **SMALL)
    model = SGRAF(module_name=module_name, **SMALL)
    model.load_state_dict({f"{p}.{k}": v for p, sd in zip(("img_enc", "txt_enc", "sim_enc"), sds)
                           for k, v in sd.items()})
    model.eval()
    g = torch.Generator().manual_seed(2)
    images = torch.randn(6, 36, SMALL["img_dim"], generator=g)
    lengths = torch.randint(2, 10, (11,), generator=g)
    tokens = torch.randint(4, SMALL["vocab_size"], (11, int(lengths.max())), generator=g)
    tokens[torch.arange(tokens.shape[1])[None] >= lengths[:, None]] = 0
    img, txt = encode_images(model, images), encode_texts(model, tokens, lengths)
    official = official_scores(model, img, txt, shard=4)  # shards of 4 exercise the shard loop
    reference = reference_similarities(sds, images, tokens, lengths, module_name).float()
    assert (official - reference).abs().max() <= 1e-5 and reference.std() > 1e-3
    assert (blocked_similarity(model, img, txt, 4, 5, progress=False) - official).abs().max() <= 1e-5


def test_fused_sgr_inference_equals_layer_by_layer():
    torch.manual_seed(0)
    graph = SimilarityGraph(16, steps=3)
    nodes = torch.randn(3, 4, 9, 16)
    mask = torch.arange(9)[None, :] < torch.tensor([9, 5, 2, 7])[:, None]  # per caption, broadcast over images
    with torch.enable_grad():
        layered = graph(nodes, mask)
    with torch.no_grad():
        fused = graph(nodes, mask)
    assert layered.requires_grad and not fused.requires_grad
    torch.testing.assert_close(fused, layered.detach(), atol=1e-5, rtol=1e-5)
    assert layered.std() > 1e-3


def test_auto_chunk_size_follows_device_and_width():
    cpu = auto_chunk_size(torch.device("cpu"), torch.float32, 1024)
    assert MIN_CHUNK <= cpu <= MAX_CHUNK and cpu & (cpu - 1) == 0  # a power of two within bounds
    assert auto_chunk_size(torch.device("cpu"), torch.float32, 256) >= cpu  # narrower rows: more slots
    assert auto_chunk_size(torch.device("cuda"), torch.float32, 1024) == GPU_CHUNK
    model = random_sgraf("SGR", **SMALL)
    img, txt, _, _ = random_gallery(model, 5, 12)
    auto = blocked_similarity(model, img, txt, progress=False)
    model.chunk_size = 9
    assert (blocked_similarity(model, img, txt, progress=False) - auto).abs().max() <= 1e-6


def test_scoring_precision_applies_and_restores():
    model = random_sgraf("SAF", **SMALL)
    img, txt, _, _ = random_gallery(model, 4, 10)
    fp32 = blocked_similarity(model, img, txt, progress=False)
    bf16 = blocked_similarity(model, img, txt, progress=False, precision="bf16")
    assert 0 < (bf16 - fp32).abs().max() < 0.05  # autocast really ran in bf16, and stays close
    saved = torch.backends.cuda.matmul.allow_tf32
    with scoring_precision("tf32", "cpu"):
        assert torch.backends.cuda.matmul.allow_tf32
    assert torch.backends.cuda.matmul.allow_tf32 == saved
    with pytest.raises(InputError, match="eval.precision"):
        blocked_similarity(model, img, txt, progress=False, precision="fp8")


def test_flops_count_the_fused_graph():
    f = flops_per_pair(14, 1024, 256, 1024, 36, 3, "SGR")
    assert 15e6 < f["executed"] < 21e6 < 25e6 < f["official"] < 32e6  # the 25-29 MFLOP official floor
    saf = flops_per_pair(14, 1024, 256, 1024, 36, 3, "SAF")
    assert saf["executed"] == saf["official"]


def test_interleaved_rounds_stats_and_deadline():
    calls = []
    fns = {"a": lambda: calls.append("a") or 1, "b": lambda: calls.append("b") or 2}
    timings, protocol = interleaved(fns, repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4 and protocol == {"rounds": 3, "cut_short": False}
    assert timings["a"]["min_s"] <= timings["a"]["median_s"] <= timings["a"]["max_s"]
    assert len(timings["b"]["runs_s"]) == 3 and timings["b"]["result"] == 2
    _, protocol = interleaved({"slow": lambda: time.sleep(0.02)}, repeats=5, warmup=0,
                              deadline=time.monotonic() + 0.01)
    assert protocol == {"rounds": 1, "cut_short": True}


def test_publishable_flag_and_atomic_json(tmp_path):
    assert publishable([0.4, 0.5, 0.6], [1.2, 0.9, 0.7])
    assert not publishable([0.4, 0.5, 0.6], [1.6, 0.9, 0.7])
    assert not publishable(None, [0.1, 0.1, 0.1])
    # the benchmark's own threads lift the load after: they do not count, a neighbour's would
    assert publishable([0.4, 0.5, 0.6], [1.9, 1.0, 0.7], own_threads=2)
    assert not publishable([1.7, 0.5, 0.6], [1.9, 1.0, 0.7], own_threads=2)
    assert not publishable([0.4, 0.5, 0.6], [3.7, 1.0, 0.7], own_threads=2)
    assert publishable([9.0, 9.0, 9.0], [9.0, 9.0, 9.0], "cuda")  # GPU figures do not depend on CPU load
    path = write_json(tmp_path / "x" / "r.json", {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1} and [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_bench_gpu_smoke(tmp_path):
    result = gpu.main(["--smoke", "--out-dir", str(tmp_path)])
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].endswith("_smoke.json") and files[1].endswith("_smoke.md")
    saved = json.loads((tmp_path / files[0]).read_text())
    for module in ("SGR", "SAF"):
        res = saved["scoring"][module]
        assert res["official"]["max_abs_diff_blocked_fp32"] <= 1e-5
        assert {"blocked_fp32", "blocked_tf32", "blocked_bf16"} <= set(res)
    assert set(saved["recall"]["bf16"]["recall_change"]) >= {"i2t_r1", "rsum"}
    assert set(saved["pooling"]) >= {"float32", "bfloat16", "part"}
    rows = [k for k in saved["training"] if k.endswith("/fp32")]
    assert rows and all(saved["training"][k]["images_per_s"] > 0 for k in rows)
    assert len(rows) == 6 or saved["training"]["part"]["cut_short"]  # a busy machine may hit the time limit
    md = (tmp_path / files[1]).read_text()
    assert len(result["figures"]) >= 20 and all(line in md for line in result["figures"])


def test_block_sizes_caller_then_model_then_default():
    model = random_sgraf("SGR", **SMALL)
    assert block_sizes(model) == (128, 512)  # SGRAF.similarity_defaults reaches make eval (eval.*_block: null)
    assert block_sizes(model, 7, None) == (7, 512) and block_sizes(object(), None, 9) == (128, 9)
    with pytest.raises(InputError, match="img_block"):
        block_sizes(model, 0, 4)


def test_bad_eval_precision_is_refused_up_front():
    check_eval_options(OmegaConf.create({"eval": {"img_block": None, "txt_block": 512, "precision": "bf16"}}))
    with pytest.raises(InputError, match="eval.precision"):
        check_eval_options(OmegaConf.create({"eval": {"precision": "fp16"}}))
