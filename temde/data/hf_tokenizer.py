"""Captions -> sub-word ids with a pretrained model's own tokenizer (the ``text_encoder=transformer`` path).

It stands in for :class:`temde.data.vocab.Vocabulary` wherever captions are encoded (``encode(caption)`` ->
ids with the model's special tokens, e.g. ``[CLS] ... [SEP]``), so datasets, collate functions and evaluation
are shared with the GRU path. Ids are contiguous from position 0, so the batch layout ``(tokens, lengths)``
carries the attention mask exactly (``mask = arange(L) < lengths``); the encoder rebuilds it and puts the
tokenizer's own pad id on padded positions. No SCAN vocabulary is needed.
"""

from __future__ import annotations

from transformers import AutoTokenizer

from temde.pretrained import resolve_pretrained

# BERT-style encoders see at most 512 positions; captions are far shorter (Flickr30K/COCO: < 100 sub-words).
DEFAULT_MAX_LENGTH = 128


class HFTokenizer:
    """A Hugging Face tokenizer loaded from local files only (:mod:`temde.pretrained`)."""

    word2idx = None  # nothing to store in checkpoints: the tokenizer is named by the model config

    def __init__(self, model_name_or_path: str, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        self.name = model_name_or_path
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(
            resolve_pretrained(model_name_or_path), local_files_only=True, trust_remote_code=False
        )
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def __len__(self) -> int:
        return len(self.tokenizer)

    def encode(self, caption: str | bytes) -> list[int]:
        """Sub-word ids of one caption, special tokens included, truncated to ``max_length``."""
        if isinstance(caption, bytes):
            caption = caption.decode("utf-8")
        return list(self.tokenizer(caption.strip(), truncation=True, max_length=self.max_length)["input_ids"])

    def id_map(self) -> dict[str, int]:
        """Every sub-word and its id (for the up-front check that ids fit the model's embedding rows)."""
        return dict(self.tokenizer.get_vocab())

    def tokens(self, ids: list[int]) -> list[str]:
        """The sub-word strings of ``ids`` (for attention pictures)."""
        return list(self.tokenizer.convert_ids_to_tokens(list(ids)))


def caption_encoder_for(model_config: dict, fallback):
    """The caption encoder a model was trained with: its HF tokenizer for ``text_encoder=transformer``,
    else ``fallback`` (a SCAN vocabulary)."""
    if model_config.get("text_encoder", "bigru") == "transformer":
        return HFTokenizer(model_config["model_name_or_path"])
    return fallback
