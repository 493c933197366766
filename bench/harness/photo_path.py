"""Protecting the faces of a whole photo on its own pixels.

An attacker loads the full photo, finds a face, cuts it out along CelebA-HQ's quad and
resizes it for the generator. The protection is optimised through that same path: the
box of the photo around the face goes in, is cut along the quad and resized with
antialiasing (bench.toolkit.face_align.cut_along), and the generator edits
that. A per-image defense (one without a fit) runs its own optimisation on the box's
pixels through `ThroughPhotoPath`, as if that were the generator; a learned defense
(a fitted perturbation, network or surrogate) protects the aligned crop it was made for,
and its change is carried back onto the photo's pixels along the same quad. Either way
only the pixels the cut reads change, each within eps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.contract.errors import BenchError
from bench.toolkit.face_align import Quad, bounds, cut_along, sampling_grid
from bench.toolkit.photos import Photo


class ThroughPhotoPath(nn.Module):
    """A generator seen from a photo's pixels: `forward(box, c)` cuts the face's aligned
    crops (one per quad: the detector's and those near it) out of the box (N, 3, h, w) of
    the photo and edits each, returning the K * N edits quad by quad. A defense's loss
    over them is its loss in expectation over the crops an attacker may cut. The sampling
    grids are made once, not at every step of the defense's optimisation."""

    def __init__(self, generator: nn.Module, quads: list[Quad], box: tuple[int, int, int, int], resolution: int):
        super().__init__()
        self.generator, self.resolution = generator, resolution
        self.name, self.attribute_names = generator.name, generator.attribute_names
        left, top, right, bottom = box
        self.grids = [sampling_grid(q, (left, top), (bottom - top, right - left), resolution) for q in quads]

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        return self.generator.targets(labels)

    def cut(self, box: torch.Tensor, count: int | None = None) -> torch.Tensor:
        """The crops of the first `count` quads (all by default), quad by quad."""
        return torch.cat([cut_along(box, grid, self.resolution) for grid in self.grids[:count]])

    def forward(self, box: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        repeats = len(self.grids)
        return self.generator(self.cut(box), condition.repeat(repeats, *[1] * (condition.dim() - 1)))


def footprint(path: ThroughPhotoPath, box: torch.Tensor) -> torch.Tensor:
    """(h, w) bool: the box's pixels the cut reads, the only ones the protection may change."""
    probe = box.detach().clone().requires_grad_(True)
    path.cut(probe).sum().backward()
    return probe.grad.abs().sum(1)[0] > 0


def carry_back(change: torch.Tensor, quad: Quad, origin: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """A change of the aligned crop (1, 3, R, R) as a change of the photo's box (1, 3, h,
    w): each box pixel takes the crop's change where the cut sees it (bilinear)."""
    h, w = size
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5,
                            indexing="ij")
    dx = xs + origin[0] - float(quad.centre[0])
    dy = ys + origin[1] - float(quad.centre[1])
    qx, qy = quad.x, quad.y
    u = (dx * qx[0] + dy * qx[1]) / float(qx @ qx)  # where the pixel lies along the crop's axes, on [-1, 1]
    v = (dx * qy[0] + dy * qy[1]) / float(qy @ qy)
    grid = torch.stack([u, v], -1).unsqueeze(0).to(change.dtype)
    return F.grid_sample(change, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def one_per_photo(protected: torch.Tensor, defense) -> torch.Tensor:
    """The protection (T, 1, 3, h, w) as one image, the same for every target."""
    if not torch.equal(protected, protected[:1].expand_as(protected)):
        raise BenchError(f"defense {defense.label!r} made a different protected image for each edit target; bench "
                         "protect needs one per photo (the defense's per_image_settings)")
    return protected[0]


def protect_face(defense, generator: nn.Module, photo: Photo, quad: Quad, labels: torch.Tensor, eps: float,
                 resolution: int, seed: int, jitter: float) -> tuple[tuple[int, int, int, int], torch.Tensor,
                                                                      torch.Tensor]:
    """Protect one face of `photo` against `generator` for the edits `labels` (1, A) ask
    for, through its quad and those `jitter` away (Quad.jittered): (box, protected box
    (1, 3, h, w) on [-1, 1], footprint (h, w))."""
    quads = quad.jittered(jitter)
    box = bounds(quads, *photo.size)
    pixels = photo.tensor(box)
    path = ThroughPhotoPath(generator, quads, box, resolution)
    reads = footprint(path, pixels)
    conditions = generator.targets(labels)
    if defense.fit_scope() is None:  # its own optimisation, on the photo's pixels through the path
        protected = one_per_photo(defense.protect(pixels, path, conditions, seed), defense)
    else:  # what it learned works on aligned crops: protect the crop, carry the change back
        with torch.no_grad():
            crop = path.cut(pixels, 1)  # the detector's crop
        change = one_per_photo(defense.protect(crop, generator, conditions, seed), defense) - crop
        protected = pixels + carry_back(change, quad, box[:2], pixels.shape[-2:]).clamp(-eps, eps)
    return box, protected.clamp(-1, 1).detach(), reads
