"""VSRN caption-generation branch: region GRU encoder + attention GRU decoder, trained by teacher forcing.

Mirrors the official ``S2VTAttModel(EncoderRNN, DecoderRNN)`` used only as a training signal: its loss reaches
the GCN region features (and ``fc``), the released checkpoints do not contain it and evaluation never runs it.

Targets follow the official ``PrecompDataset`` (docs/vsrn.md, "Caption targets"): ``cap = <start> words <end>`` truncated to
``max_len`` tokens (last one forced to ``<end>``); the decoder reads ``cap[t]`` and predicts ``cap[t+1]`` for
``t < max_len - 1``, and the mask covers one position past ``<end>`` (so one ``<pad>`` is also predicted).
The loss is summed over tokens and divided by the batch size.

The step loop is inherent (attention depends on the previous hidden state); everything that does not depend on it
(word embeddings, the encoder half of the attention projection, the vocabulary projection) is batched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

# Official token ids (vocab.py): <pad>=0 is also the decoder's eos_id; <end>=2.
PAD_ID, END_ID = 0, 2
# Official --max_len default (also passed by the README F30K command).
MAX_LEN = 60


def caption_targets(tokens: Tensor, lengths: Tensor, max_len: int = MAX_LEN) -> tuple[Tensor, Tensor, Tensor]:
    """Teacher-forcing inputs, targets and target mask, each (B, T), T = min(max caption length, max_len - 1).

    ``tokens`` (B, L) are ``<start> words <end>`` zero-padded, ``lengths`` (B,) count them.
    """
    lengths = torch.as_tensor(lengths, device=tokens.device).long()
    capped = lengths.clamp(max=max_len)  # official: cap = cap[:max_len]; cap[-1] = '<end>'
    steps = int(capped.max()) if capped.numel() else 0
    steps = min(steps, max_len - 1)
    width = steps + 1
    labels = tokens.new_zeros(tokens.shape[0], width)
    n = min(width, tokens.shape[1])
    labels[:, :n] = tokens[:, :n]
    positions = torch.arange(width, device=tokens.device)[None, :]
    labels = labels.masked_fill(positions >= capped[:, None], PAD_ID)  # anything past the (capped) caption
    truncated = lengths > max_len - 1  # official condition len(cap) > max_len - 1; then width == max_len
    if bool(truncated.any()):
        labels[truncated, max_len - 1] = END_ID
    # mask over labels = ones on positions 0..len(cap); over targets labels[:, 1:] -> positions t < len(cap)
    target_mask = positions[:, :steps] < capped[:, None]
    return labels[:, :steps], labels[:, 1 : steps + 1], target_mask


def caption_loss(logprobs: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Official LanguageModelCriterion: masked NLL summed over steps and batch, divided by the batch size."""
    nll = -logprobs.gather(2, targets.unsqueeze(2)).squeeze(2)
    return (nll * mask.to(nll.dtype)).sum() / logprobs.shape[0]


class CaptionEncoder(nn.Module):
    """Official EncoderRNN: Linear(D, H) -> dropout -> GRU(H, H) over the regions."""

    def __init__(self, dim_vid: int = 2048, dim_hidden: int = 512, input_dropout_p: float = 0.2) -> None:
        super().__init__()
        self.vid2hid = nn.Linear(dim_vid, dim_hidden)
        self.input_dropout = nn.Dropout(input_dropout_p)
        self.rnn = nn.GRU(dim_hidden, dim_hidden, 1, batch_first=True)
        nn.init.xavier_normal_(self.vid2hid.weight)  # official _init_hidden

    def forward(self, regions: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = self.input_dropout(self.vid2hid(regions))
        if mask is None or bool(mask.all()):
            return self.rnn(x)
        lengths = mask.sum(dim=1).clamp(min=1).cpu()
        out, hidden = self.rnn(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out, hidden


class Attention(nn.Module):
    """Official Attention: e_i = w2 . tanh(W1 [enc_i ; h]), softmax over regions."""

    def __init__(self, dim_hidden: int = 512) -> None:
        super().__init__()
        self.linear1 = nn.Linear(2 * dim_hidden, dim_hidden)
        self.linear2 = nn.Linear(dim_hidden, 1, bias=False)

    def precompute(self, enc_out: Tensor) -> Tensor:
        """The encoder half of W1 [enc ; h] (+ bias): constant over decoding steps."""
        dim = enc_out.shape[-1]
        return F.linear(enc_out, self.linear1.weight[:, :dim], self.linear1.bias)

    def forward(self, enc_out: Tensor, enc_proj: Tensor, hidden: Tensor, mask: Tensor | None) -> Tensor:
        """enc_out (B, N, H), enc_proj (B, N, H), hidden (B, H) -> context (B, H)."""
        dim = enc_out.shape[-1]
        energy = self.linear2(torch.tanh(enc_proj + F.linear(hidden, self.linear1.weight[:, dim:])[:, None]))
        energy = energy.squeeze(2)
        if mask is not None:
            energy = energy.masked_fill(~mask, float("-inf"))
        alpha = energy.softmax(dim=1)
        return torch.bmm(alpha.unsqueeze(1), enc_out).squeeze(1)


class AttentionDecoder(nn.Module):
    """Official DecoderRNN in teacher-forcing mode: x_t = dropout([embed(w_t) ; ctx_t]), GRU, log-softmax."""

    def __init__(
        self, vocab_size: int, dim_hidden: int = 512, dim_word: int = 300, input_dropout_p: float = 0.2
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim_word)  # default N(0, 1) init, separate from the text encoder
        self.attention = Attention(dim_hidden)
        self.input_dropout = nn.Dropout(input_dropout_p)
        self.rnn = nn.GRU(dim_word + dim_hidden, dim_hidden, 1, batch_first=True)
        self.out = nn.Linear(dim_hidden, vocab_size)
        nn.init.xavier_normal_(self.out.weight)  # official _init_weights

    def forward(self, enc_out: Tensor, enc_hidden: Tensor, inputs: Tensor, mask: Tensor | None = None) -> Tensor:
        """enc_out (B, N, H), enc_hidden (1, B, H), inputs (B, T) ids -> log-probabilities (B, T, V)."""
        words = self.embedding(inputs)
        enc_proj = self.attention.precompute(enc_out)
        hidden = enc_hidden
        outputs = []
        for t in range(inputs.shape[1]):
            context = self.attention(enc_out, enc_proj, hidden[-1], mask)
            x = self.input_dropout(torch.cat([words[:, t], context], dim=1))
            out, hidden = self.rnn(x.unsqueeze(1), hidden)
            outputs.append(out)
        if not outputs:
            return words.new_zeros(inputs.shape[0], 0, self.out.out_features)
        return F.log_softmax(self.out(torch.cat(outputs, dim=1)), dim=-1)


class CaptionGenerator(nn.Module):
    """Encoder + decoder; ``loss`` gives the official generation loss L_G for one batch."""

    def __init__(
        self,
        vocab_size: int,
        dim_vid: int = 2048,
        dim_hidden: int = 512,
        dim_word: int = 300,
        input_dropout_p: float = 0.2,
        max_len: int = MAX_LEN,
    ) -> None:
        super().__init__()
        self.max_len = max_len
        self.encoder = CaptionEncoder(dim_vid, dim_hidden, input_dropout_p)
        self.decoder = AttentionDecoder(vocab_size, dim_hidden, dim_word, input_dropout_p)

    def forward(self, regions: Tensor, inputs: Tensor, mask: Tensor | None = None) -> Tensor:
        enc_out, enc_hidden = self.encoder(regions, mask)
        return self.decoder(enc_out, enc_hidden, inputs, mask)

    def loss(self, regions: Tensor, tokens: Tensor, lengths: Tensor, mask: Tensor | None = None) -> Tensor:
        """regions (B, N, D) are paired row by row with captions ``tokens`` (B, L) / ``lengths`` (B,)."""
        inputs, targets, target_mask = caption_targets(tokens, lengths, self.max_len)
        return caption_loss(self(regions, inputs, mask), targets, target_mask)
