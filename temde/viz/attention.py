"""What a model attends to and retrieves, for one caption and one image of a split, drawn into one PNG.

Why: users of SGRAF/VSRN keep asking how to see the attention (SGRAF#6, #15; VSRN#4, #16). For a caption and an
image this computes

- the text-to-image attention of every word over the regions: SGRAF's own SCAN attention (its ``attn_lambda``)
  on its word and region features; VSRN has no cross-attention, so the same SCAN formula is applied to its word
  states and GCN regions as an *inspection* of how they align (not something VSRN's score uses);
- the top retrieved images for the caption and captions for the image, with scores (the whole split is scored);
- for T-EMDE models, the hard sketch buckets (per depth, :meth:`TEMDE.hard_codes`) that the caption and the image
  share, and which words and regions fall in them.

The picture shows the attention as weighted boxes on the image when the image file and its boxes
(``extract_features.py --regions detector``) are given, else as a words x regions heat map.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.patches as patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from temde.checkpoint import checkpoint_vocabulary  # noqa: E402
from temde.data.hf_tokenizer import HFTokenizer, caption_encoder_for  # noqa: E402
from temde.data.precomp import CAPTIONS_PER_IMAGE, PrecompDataset  # noqa: E402
from temde.data.vocab import Vocabulary, load_vocab  # noqa: E402
from temde.models.sgraf import SGRAF  # noqa: E402
from temde.models.vsrn import VSRN  # noqa: E402
from temde.modules.attention import ATTN_LAMBDA, t2i_attention_weights  # noqa: E402
from temde.modules.hf_text import TransformerTextEncoder  # noqa: E402
from temde.modules.norms import l2norm_clamped as l2norm  # noqa: E402  (VSRN's l2norm)
from temde.modules.temde import TEMDE  # noqa: E402
from temde.retrieval import split_similarity  # noqa: E402

MAX_WORD_PANELS = 8  # words drawn as box pictures (the heat map shows all)


def checkpoint_caption_encoder(path: str | Path, payload: dict[str, Any], vocab_path: str | Path | None = None
                               ) -> Vocabulary | HFTokenizer:
    """What a checkpoint's captions are encoded with: a transformer's own tokenizer, else the checkpoint's
    vocabulary (an explicit ``vocab_path`` must equal it, or stand in when none is stored)."""
    tokenizer = caption_encoder_for(payload["model_config"], None)
    if tokenizer is not None:
        return tokenizer
    explicit = load_vocab(vocab_path).word2idx if vocab_path else None
    return Vocabulary(checkpoint_vocabulary(path, payload, explicit, vocab_path))


def dataset_similarity(model: nn.Module, dataset: PrecompDataset) -> Tensor:
    """(n_images, n_captions) scores of a whole split (encode once, blocked scoring)."""
    tokens, lengths = dataset.caption_tokens()
    return split_similarity(model.eval(), dataset.image_features(), tokens, lengths)


def caption_words(vocab: Any, ids: Sequence[int]) -> list[str]:
    """Token strings of ``ids``: a SCAN vocabulary's words or a Hugging Face tokenizer's sub-words."""
    if hasattr(vocab, "tokens"):
        return vocab.tokens(list(ids))
    return [vocab.idx2word.get(int(i), "<unk>") for i in ids]


@dataclass
class Explanation:
    caption_index: int
    image_index: int
    words: list[str]
    attention: np.ndarray  # (L, R) rows sum to 1
    top_images: list[tuple[int, float]]  # for the caption, best first
    top_captions: list[tuple[int, float]]  # for the image, best first
    shared_buckets: list[dict[str, Any]] = field(default_factory=list)  # T-EMDE only
    sketch_shape: tuple[int, int] | None = None  # (depth, buckets per depth) of a T-EMDE model, else None


def _tokens_and_states(model: nn.Module, image: Tensor, ids: list[int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(regions (R, D), words (L, D)) in the model's joint space, plus the token sets its sketchers see."""
    tokens = torch.tensor([ids])
    lengths = torch.tensor([len(ids)])
    if isinstance(model, SGRAF):
        regions = model.encode_images(image[None])["regions"][0]
        words = model.encode_texts(tokens, lengths)["words"][0]
        return regions, words, regions, words
    if isinstance(model, VSRN):
        _, regions, _ = model.img_enc(image[None])
        if isinstance(model.txt_enc, TransformerTextEncoder):
            states = model.txt_enc(tokens, lengths)
        else:
            _, states, _ = model.txt_enc(tokens, lengths)
        regions, states = regions[0], states[0]
        return l2norm(regions), l2norm(states), l2norm(regions), l2norm(states)
    raise TypeError(f"attention pictures support SGRAF and VSRN models, not {type(model).__name__}")


def _sketchers(model: nn.Module) -> tuple[TEMDE, TEMDE] | None:
    if isinstance(model, SGRAF) and isinstance(model.sim_enc.v_global_w, TEMDE):
        return model.sim_enc.v_global_w, model.sim_enc.t_global_w
    if isinstance(model, VSRN) and getattr(model, "additive", False):
        return model.image_sketcher, model.text_sketcher
    return None


def shared_buckets(image_codes: Tensor, word_codes: Tensor, words: Sequence[str]) -> list[dict[str, Any]]:
    """Buckets (per depth) that hold at least one region and one word: codes (R, depth), (L, depth)."""
    out = []
    for d in range(image_codes.shape[1]):
        for bucket in sorted(set(image_codes[:, d].tolist()) & set(word_codes[:, d].tolist())):
            out.append({"depth": d, "bucket": int(bucket),
                        "regions": [int(r) for r in (image_codes[:, d] == bucket).nonzero().flatten()],
                        "words": [words[w] for w in (word_codes[:, d] == bucket).nonzero().flatten()]})
    return out


@torch.no_grad()
def explain(model: nn.Module, dataset: PrecompDataset, caption_index: int, image_index: int,
            words: Sequence[str], k: int = 5, sims: Tensor | None = None) -> Explanation:
    """Attention, top-k retrievals and shared buckets for one caption and one image of ``dataset``.

    ``words`` are the caption's token strings (same length as its ids); ``sims`` the split's (images,
    captions) similarity matrix when already computed."""
    if not 0 <= caption_index < len(dataset):
        raise IndexError(f"caption {caption_index} out of range [0, {len(dataset)})")
    if not 0 <= image_index < dataset.n_images:
        raise IndexError(f"image {image_index} out of range [0, {dataset.n_images})")
    model.eval()
    image = torch.from_numpy(np.array(dataset.features[dataset.image_row(image_index * CAPTIONS_PER_IMAGE)],
                                      dtype=np.float32))
    ids = dataset.vocab.encode(dataset.captions[caption_index])
    if len(words) != len(ids):
        raise ValueError(f"{len(words)} word strings for {len(ids)} token ids")
    regions, word_states, region_set, word_set = _tokens_and_states(model, image, ids)
    lam = float(getattr(model, "attn_lambda", ATTN_LAMBDA))
    attention = t2i_attention_weights(regions, word_states, None, lam)
    if sims is None:
        sims = dataset_similarity(model, dataset)
    col, row = sims[:, caption_index], sims[image_index]
    top_images = [(int(i), float(col[i])) for i in torch.argsort(-col, stable=True)[:k]]
    top_captions = [(int(j), float(row[j])) for j in torch.argsort(-row, stable=True)[:k]]
    buckets: list[dict[str, Any]] = []
    sketchers = _sketchers(model)
    shape = None
    if sketchers is not None:
        shape = (int(sketchers[0].depth), int(sketchers[0].width))
        image_codes = sketchers[0].hard_codes(region_set[None])[0]
        word_codes = sketchers[1].hard_codes(word_set[None])[0]
        buckets = shared_buckets(image_codes, word_codes, list(words))
    return Explanation(caption_index, image_index, list(words), attention.numpy(), top_images, top_captions,
                       buckets, shape)


def draw(expl: Explanation, out_png: str | Path, captions: Sequence[str], image_file: str | Path | None = None,
         boxes: np.ndarray | None = None) -> Path:
    """One PNG: attention (boxes on the image, or a heat map), retrievals, shared buckets."""
    with_boxes = image_file is not None and boxes is not None
    n_word_panels = min(len(expl.words), MAX_WORD_PANELS) if with_boxes else 0
    fig = plt.figure(figsize=(max(10, 2.2 * n_word_panels), 9 + (2.6 if with_boxes else 0)))
    grid = fig.add_gridspec(3 if with_boxes else 2, max(n_word_panels, 2), height_ratios=[1.3, 1, 1][: 3 if
                                                                                                   with_boxes else 2])
    row = 0
    if with_boxes:
        picture = np.asarray(Image.open(image_file).convert("RGB"))
        for w in range(n_word_panels):
            ax = fig.add_subplot(grid[0, w])
            ax.imshow(picture)
            weights = expl.attention[w]
            for r in np.argsort(-weights)[:5]:
                x1, y1, x2, y2 = boxes[r]
                if x1 < 0:  # padded region
                    continue
                ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="red",
                                               linewidth=0.5 + 4 * float(weights[r]), alpha=min(1.0, 0.3 +
                                                                                               float(weights[r]))))
            ax.set_title(expl.words[w], fontsize=9)
            ax.axis("off")
        row = 1
    ax = fig.add_subplot(grid[row, :])
    im = ax.imshow(expl.attention, aspect="auto", cmap="viridis", vmin=0)
    ax.set_yticks(range(len(expl.words)), expl.words, fontsize=8)
    ax.set_xlabel("region")
    ax.set_title(f"text-to-image attention: caption {expl.caption_index} over the regions of image "
                 f"{expl.image_index}")
    fig.colorbar(im, ax=ax, fraction=0.02)
    ax = fig.add_subplot(grid[row + 1, :])
    ax.axis("off")
    lines = [f"caption {expl.caption_index}: {captions[expl.caption_index]}",
             "top images for it: " + ", ".join(f"{i}{'*' if i == expl.caption_index // CAPTIONS_PER_IMAGE else ''}"
                                               f" ({s:.3f})" for i, s in expl.top_images),
             f"top captions for image {expl.image_index}:"]
    lines += [f"  {j}{'*' if j // CAPTIONS_PER_IMAGE == expl.image_index else ''} ({s:.3f}) {captions[j][:80]}"
              for j, s in expl.top_captions]
    if expl.sketch_shape is not None and not expl.shared_buckets:
        lines.append(f"T-EMDE: no bucket holds both a word and a region ({expl.sketch_shape[0]} depths x "
                     f"{expl.sketch_shape[1]} buckets)")
    if expl.shared_buckets:
        lines.append(f"T-EMDE buckets shared by caption and image: {len(expl.shared_buckets)} (first 6)")
        lines += [f"  depth {b['depth']} bucket {b['bucket']}: words {b['words'][:6]} regions {b['regions'][:8]}"
                  for b in expl.shared_buckets[:6]]
    ax.text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=8)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(out)
    return out
