"""Embeddings of unlabeled images that CACTUs clusters (Hsu, Levine & Finn, ICLR 2019).

The paper clusters features from unsupervised encoders trained for hours on a GPU: ACAI (an
adversarially regularized autoencoder) and BiGAN for Omniglot, DeepCluster for miniImageNet.
Here the encoders are ones that cost seconds to a few minutes on a CPU, found by name in
:data:`EMBEDDINGS`:

* ``"pca"``: the top ``dim`` principal components of the pixels (each image blurred by a
  Gaussian of ``blur_sigma`` pixels first, which makes strokes drawn a pixel apart overlap), from
  the eigenvectors of the pixel covariance (``torch.linalg.eigh``); the projections keep their
  variances (no whitening), so k-means weights the components by how much they vary.
* ``"random-conv4"``: a randomly initialised Conv-4 (:class:`innerloop.nn.Conv4`, no
  normalization layers) from ``seed``, its 64 outputs standardized per feature.
* ``"autoencoder"``: the bottleneck of a small convolutional autoencoder trained here
  (:mod:`innerloop.unsupervised.autoencoder`).

Every function takes ``uint8 [N, H, W]`` images and returns ``float32 [N, dim]`` features; none
sees a label. :func:`unlabeled_images` is how the images of a split reach them: the rows of its
classes, in store order, with the class structure dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn import functional as F

from innerloop.data.store import ClassSplit
from innerloop.errors import InnerloopError
from innerloop.nn import Conv4

EMBEDDING_BATCH = 1024  # images per forward pass of an encoder


def unlabeled_images(split: ClassSplit) -> Tensor:
    """Every stored image of ``split``'s classes once (rotations are not stored: they are applied
    to pseudo-classes later), in ascending row order: ``uint8 [N, (C,) H, W]``.

    Only *which rows* the split holds is read here; which class a row belongs to is dropped, so
    a store with the same rows and any class boundaries gives the same tensor."""
    store = split.store
    classes = torch.unique(split.base_classes)
    offsets, counts = store.class_offsets[classes], store.class_counts[classes]
    in_split = torch.zeros(store.images.shape[0], dtype=torch.bool)
    for offset, count in zip(offsets.tolist(), counts.tolist()):
        in_split[offset:offset + count] = True
    return store.images[in_split.nonzero().squeeze(1)]


def as_float_images(images: Tensor) -> Tensor:
    """``uint8 [N, H, W]`` or ``[N, C, H, W]`` → ``float32 [N, C, H, W]`` in ``[0, 1]``."""
    if images.dtype != torch.uint8:
        raise InnerloopError(f"CACTUs embeds uint8 images; got {images.dtype} (feature-vector "
                             f"datasets are not supported by data.pseudo_labels)")
    images = images.unsqueeze(1) if images.dim() == 3 else images
    return images.to(torch.float32) / 255.0


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """``images [N, C, H, W]`` convolved with a separable Gaussian of ``sigma`` pixels
    (zero padding; ``sigma = 0`` returns them unchanged)."""
    if sigma <= 0:
        return images
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-offsets.pow(2) / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    horizontal = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    images = F.conv2d(images, horizontal, padding=(0, radius), groups=channels)
    return F.conv2d(images, vertical, padding=(radius, 0), groups=channels)


def fit_pca(pixels: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """``(mean [P], components [P, dim])`` of ``pixels [N, P]``: the top ``dim`` eigenvectors of the
    covariance, largest first, each signed so that its largest-magnitude loading is positive."""
    if not 1 <= dim <= pixels.shape[1]:
        raise InnerloopError(f"cactus.embedding_dim must be in 1..{pixels.shape[1]} (the pixels per "
                             f"image) for the pca embedding, got {dim}")
    pixels = pixels.double()
    mean = pixels.mean(0)
    centred = pixels - mean
    covariance = centred.T @ centred / max(1, pixels.shape[0] - 1)
    _, eigenvectors = torch.linalg.eigh(covariance)  # ascending eigenvalues
    components = eigenvectors[:, -dim:].flip(1)
    signs = torch.sign(components.gather(0, components.abs().argmax(0, keepdim=True)))
    return mean, components * signs


def blurred_pixels(images: Tensor, blur_sigma: float) -> Tensor:
    """``float [N, C, H, W]`` images in ``[0, 1]`` → ``[N, C * H * W]`` after :func:`gaussian_blur`."""
    return gaussian_blur(images, blur_sigma).flatten(1)


def pca_embedding(images: Tensor, dim: int = 64, seed: int = 0, blur_sigma: float = 1.0, **_: object) -> Tensor:
    """Projections of the (blurred) centred pixels on their top ``dim`` principal components."""
    pixels = blurred_pixels(as_float_images(images), blur_sigma).double()
    mean, components = fit_pca(pixels, dim)
    return ((pixels - mean) @ components).float()


@torch.no_grad()
def random_conv4_embedding(images: Tensor, dim: int = 64, seed: int = 0, **_: object) -> Tensor:
    """Features of a Conv-4 with random weights from ``seed``, standardized per feature; ``dim`` is
    its channel count (the 28x28 Conv-4 ends in ``1 x 1 x dim``)."""
    pixels = as_float_images(images)
    generator_state = torch.get_rng_state()
    torch.manual_seed(seed)
    encoder = Conv4(in_channels=pixels.shape[1], hidden_channels=dim, image_size=pixels.shape[-1],
                    batch_norm="none", channels_last=False).eval()
    torch.set_rng_state(generator_state)
    features = torch.cat([encoder(pixels[start:start + EMBEDDING_BATCH])
                          for start in range(0, pixels.shape[0], EMBEDDING_BATCH)])
    return (features - features.mean(0)) / features.std(0).clamp(min=1e-8)


def autoencoder_embedding(images: Tensor, dim: int = 64, seed: int = 0, **options: object) -> Tensor:
    """The bottleneck features of :func:`innerloop.unsupervised.autoencoder.train_autoencoder`."""
    from innerloop.unsupervised.autoencoder import train_autoencoder

    steps = int(options.get("autoencoder_steps", 2000))  # type: ignore[call-overload]
    return train_autoencoder(as_float_images(images), dim, steps=steps, seed=seed).embed()


EMBEDDINGS: dict[str, Callable[..., Tensor]] = {
    "pca": pca_embedding,
    "random-conv4": random_conv4_embedding,
    "autoencoder": autoencoder_embedding,
}
