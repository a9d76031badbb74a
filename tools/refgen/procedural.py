"""Procedural test images shared by the fixture scripts."""
import numpy as np
from PIL import Image


def photo_like(h, w, seed):
    """An image with a natural photo's statistics: smooth regions at several
    scales (1/f-like spectrum), sharp object edges, fine noise."""
    rng = np.random.RandomState(seed)
    img = np.zeros((h, w, 3), np.float32)
    for scale in (64, 16, 4):
        small = rng.normal(0, 1, (h // scale + 2, w // scale + 2, 3)).astype(np.float32)
        ups = [np.asarray(Image.fromarray(small[..., c]).resize((w, h), Image.BICUBIC)) for c in range(3)]
        img += np.stack(ups, -1) * (scale / 64.0) * 40
    img += 120
    y, x = np.mgrid[0:h, 0:w]
    for _ in range(6):
        cy, cx, r = rng.randint(0, h), rng.randint(0, w), rng.randint(20, h // 3)
        img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.randint(0, 256, 3)
    img += rng.normal(0, 6, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
