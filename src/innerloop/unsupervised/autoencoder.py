"""A small convolutional autoencoder whose bottleneck embeds images for CACTUs.

The stand-in for the paper's ACAI encoder (Berthelot et al. 2019, as used by Hsu, Levine & Finn
2019) that trains in minutes on a CPU: no adversarial interpolation regularizer, a plain
reconstruction loss. ``encoder``: three ``3x3 stride-2 conv → ReLU`` layers (32, 64, 64
channels; 28 → 14 → 7 → 4) and a linear map to ``dim`` features; ``decoder``: a linear map back
to ``64 x 7 x 7`` and two ``4x4 stride-2 transposed conv`` layers to one logit per pixel.
Training minimizes ``binary_cross_entropy_with_logits(decoder(encoder(x)), x)`` (pixel
intensities in ``[0, 1]`` as targets) with Adam over ``steps`` random batches drawn from
``seed``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from innerloop.errors import InnerloopError

BATCH_SIZE = 128
LEARNING_RATE = 1e-3


class ConvAutoencoder(nn.Module):
    """``[B, C, 28, 28] → [B, dim] → [B, C, 28, 28]`` logits."""

    def __init__(self, channels: int = 1, dim: int = 64) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(64 * 4 * 4, dim))
        self.decoder = nn.Sequential(
            nn.Linear(dim, 64 * 7 * 7), nn.ReLU(), nn.Unflatten(1, (64, 7, 7)),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(32, channels, 4, stride=2, padding=1))

    def forward(self, images: Tensor) -> Tensor:
        return self.decoder(self.encoder(images))


class TrainedAutoencoder:
    """An autoencoder trained on ``images``, and the loss of its last 100 steps."""

    def __init__(self, model: ConvAutoencoder, images: Tensor, final_loss: float) -> None:
        self.model, self.images, self.final_loss = model, images, final_loss

    @torch.no_grad()
    def embed(self, batch_size: int = 1024) -> Tensor:
        """``float32 [N, dim]`` bottleneck features of the training images."""
        self.model.eval()
        return torch.cat([self.model.encoder(self.images[start:start + batch_size])
                          for start in range(0, self.images.shape[0], batch_size)])


def train_autoencoder(images: Tensor, dim: int, steps: int = 2000, seed: int = 0) -> TrainedAutoencoder:
    """Train a :class:`ConvAutoencoder` on ``float32 [N, C, 28, 28]`` images in ``[0, 1]``."""
    if images.shape[-2:] != (28, 28):
        raise InnerloopError(f"the autoencoder embedding is built for 28x28 images (data.image_size: 28); "
                             f"got {tuple(images.shape[-2:])}: use the pca embedding for other sizes")
    generator = torch.Generator().manual_seed(seed)
    rng_state = torch.get_rng_state()
    torch.manual_seed(seed)
    model = ConvAutoencoder(images.shape[1], dim)
    torch.set_rng_state(rng_state)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    recent: list[float] = []
    model.train()
    for _ in range(steps):
        batch = images[torch.randint(images.shape[0], (BATCH_SIZE,), generator=generator)]
        loss = F.binary_cross_entropy_with_logits(model(batch), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        recent = (recent + [float(loss.detach())])[-100:]
    return TrainedAutoencoder(model, images, sum(recent) / max(1, len(recent)))
