"""BERT's input embeddings: word + position + token type, then LayerNorm and dropout.

Parameter names mirror Hugging Face's ``BertEmbeddings`` (word_embeddings, position_embeddings,
token_type_embeddings, LayerNorm) so a BERT checkpoint's ``embeddings.*`` keys load one to one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pixelbert.config import TransformerConfig


class TextEmbeddings(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        self.register_buffer("position_ids", torch.arange(config.max_position_embeddings), persistent=False)
        for embedding in (self.word_embeddings, self.position_embeddings, self.token_type_embeddings):
            nn.init.normal_(embedding.weight, std=0.02)  # BERT's initializer_range
        with torch.no_grad():
            self.word_embeddings.weight[config.pad_token_id].zero_()

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """[B, T] token ids (and optional type ids, default 0 = text) -> [B, T, H]."""
        length = input_ids.shape[1]
        if length > self.config.max_position_embeddings:
            raise ValueError(f"text of {length} tokens exceeds max_position_embeddings "
                             f"{self.config.max_position_embeddings}; truncate it in the tokenizer")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(self.position_ids[:length])
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.LayerNorm(x))
