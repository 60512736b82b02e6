"""A fully connected backbone: ``Linear → ReLU`` blocks (the MAML sinusoid network is MLP(40, 40)).

The output is the last hidden layer (``embedding_dim`` features); the learner adds its own head.
"""

from __future__ import annotations

from torch import Tensor, nn


class MLP(nn.Module):
    """``[B, in_features] → [B, hidden_sizes[-1]]`` through ``Linear → ReLU`` blocks."""

    def __init__(self, in_features: int = 1, hidden_sizes: tuple[int, ...] = (40, 40)) -> None:
        super().__init__()
        if not hidden_sizes or min(hidden_sizes) < 1:
            raise ValueError(f"MLP needs at least one hidden layer of size >= 1, got {hidden_sizes}")
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.layers = nn.Sequential(*layers)
        self.embedding_dim = width

    def forward(self, inputs: Tensor) -> Tensor:
        return self.layers(inputs)


class ResidualMLP(nn.Module):
    """``x + output(MLP(x))``: an :class:`MLP` branch followed by a linear layer back to the
    input width that starts at zero, so the network starts as the identity and training moves
    away from the input features only where that helps (an adapter on pretrained embeddings).
    ``[B, in_features] → [B, in_features]``."""

    def __init__(self, in_features: int = 1, hidden_sizes: tuple[int, ...] = (40,)) -> None:
        super().__init__()
        self.hidden = MLP(in_features, hidden_sizes)
        self.output = nn.Linear(self.hidden.embedding_dim, in_features)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)
        self.embedding_dim = in_features

    def forward(self, inputs: Tensor) -> Tensor:
        return inputs + self.output(self.hidden(inputs))
