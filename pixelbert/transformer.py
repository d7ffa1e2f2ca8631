"""The cross-modal transformer shared by every model: BERT's post-LayerNorm encoder plus its pooler.

It reads one sequence ``[CLS] text [SEP] visual tokens`` and lets every token attend to every other real token.
Attention uses ``scaled_dot_product_attention`` (fused kernels on CPU and GPU) with a key-padding mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixelbert.config import TransformerConfig

# BERT config names -> a fresh activation module (factories, so no module instance is shared between models).
ACTIVATIONS = {
    "gelu": lambda: nn.GELU(),  # exact erf GELU, as in BERT
    "gelu_new": lambda: nn.GELU(approximate="tanh"),
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": lambda: nn.ReLU(),
}


class SelfAttention(nn.Module):
    """Multi-head self-attention with a key-padding mask (output projection included, no residual)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.head_dim = config.hidden_size // config.num_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.output = nn.Linear(config.hidden_size, config.hidden_size)
        self.attention_dropout = config.attention_dropout

    def _heads(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # [B, heads, L, d]

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        """x [B, L, H]; attn_mask None (all real) or bool [B, 1, 1, L], True = may be attended to."""
        context = F.scaled_dot_product_attention(
            self._heads(self.query(x)),
            self._heads(self.key(x)),
            self._heads(self.value(x)),
            attn_mask=attn_mask,
            dropout_p=self.attention_dropout if self.training else 0.0,
        )
        batch, _, length, _ = context.shape
        return self.output(context.transpose(1, 2).reshape(batch, length, -1))


class TransformerLayer(nn.Module):
    """Post-LN block (BERT): x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.attention = SelfAttention(config)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn_in = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACTIVATIONS[config.hidden_act]()
        self.ffn_out = nn.Linear(config.intermediate_size, config.hidden_size)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        x = self.attention_norm(x + self.dropout(self.attention(x, attn_mask)))
        return self.ffn_norm(x + self.dropout(self.ffn_out(self.activation(self.ffn_in(x)))))


class Pooler(nn.Module):
    """BERT's pooler: dense + tanh on the first token ([CLS])."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)

    def forward(self, sequence: Tensor) -> Tensor:
        return torch.tanh(self.dense(sequence[:, 0]))


@dataclass
class TransformerOutput:
    sequence: Tensor
    """[B, T + N, H]: text positions first, then visual tokens."""
    pooled: Tensor
    """[B, H]: the pooled [CLS] vector every task head reads."""


def key_padding_mask(mask: Tensor) -> Tensor | None:
    """Bool [B, L] (True = real) -> [B, 1, 1, L] for SDPA, or None when nothing is padded (fast path).

    A row with no real token at all would make softmax divide by zero (NaN); such rows attend to every
    position instead. Their outputs are meaningless but finite, and no loss should read them.
    """
    if bool(mask.all()):
        return None
    safe = mask | ~mask.any(dim=1, keepdim=True)
    return safe[:, None, None, :]


def _init_weights(module: nn.Module) -> None:
    """BERT's initialisation: normal(0, 0.02) weights, zero biases, unit LayerNorm."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class CrossModalTransformer(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(TransformerLayer(config) for _ in range(config.num_layers))
        self.pooler = Pooler(config.hidden_size)
        self.apply(_init_weights)

    def encode(self, hidden: Tensor, mask: Tensor) -> TransformerOutput:
        """Run the layers on an already-assembled sequence [B, L, H] with its bool mask [B, L]."""
        attn_mask = key_padding_mask(mask)
        for layer in self.layers:
            hidden = layer(hidden, attn_mask)
        return TransformerOutput(sequence=hidden, pooled=self.pooler(hidden))

    def forward(self, text: Tensor, text_mask: Tensor, visual: Tensor | None = None,
                visual_mask: Tensor | None = None) -> TransformerOutput:
        """text [B, T, H] ([CLS] ... [SEP] embeddings) + mask [B, T]; visual [B, N, H] + mask [B, N] (N may be 0).

        Text padding sits between the text and the visual tokens; the mask hides it, and positions are already
        in the embeddings, so the gap changes nothing.
        """
        text_mask = text_mask.bool()
        if visual is None or visual.shape[1] == 0:
            return self.encode(text, text_mask)
        if visual_mask is None:
            visual_mask = torch.ones(visual.shape[:2], dtype=torch.bool, device=visual.device)
        hidden = torch.cat([text, visual.to(text.dtype)], dim=1)
        return self.encode(hidden, torch.cat([text_mask, visual_mask.bool()], dim=1))
