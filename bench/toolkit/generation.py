"""Running a generator (or a bypassed pipeline) over many inputs and conditions, and
what its edits ask for."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

from bench.toolkit.attacks import chunked, device_of, flatten_targets
from bench.toolkit.device import autocast


def batched_generate(generator, x: torch.Tensor, conditions: torch.Tensor, batch_size: int,
                     amp: bool = False) -> torch.Tensor:
    """x: (N, ...) or (T, N, ...) inputs; conditions (T, N, ...) -> outputs (T, N, 3, H, W),
    computed on the generator's device (mixed precision there if `amp`), returned on the CPU."""
    t, device = conditions.size(0), device_of(generator)
    if x.dim() == 4:
        xs, cs = flatten_targets(x, conditions)
    else:
        xs, cs = x.reshape(-1, *x.shape[2:]), conditions.reshape(-1, *conditions.shape[2:])
    with torch.no_grad(), autocast(device, amp):
        out = chunked(lambda xb, cb: generator(xb, cb).float(), xs, cs, batch_size=batch_size, device=device)
    return out.view(t, -1, *out.shape[1:])


def pipeline_outputs(pipeline, x: torch.Tensor, conditions: torch.Tensor, batch_size: int,
                     amp: bool = False) -> torch.Tensor:
    """A bypassed pipeline's outputs (T, N, 3, H, W) on inputs x (clean (N, ...), shared by
    every target, or protected (T, N, ...)): the inputs purified once, then generated."""
    device = device_of(pipeline.model)
    purified = chunked(pipeline.purify, x.reshape(-1, *x.shape[-3:]), batch_size=batch_size,
                       device=device).view(x.shape)
    return batched_generate(pipeline.model, purified, conditions, batch_size, amp)


@dataclass
class Edits:
    """What the edits of one generator ask for, for the attribute metrics: the expected
    (T, N) attribute values, the target names and the no-edit conditions."""
    expected: torch.Tensor
    target_names: list[str]
    unedited: torch.Tensor  # (1, N, ...)


def edits_of(generator, labels: torch.Tensor) -> Edits | None:
    try:
        return Edits(generator.target_values(labels), generator.target_names(),
                     generator.unedited_conditions(labels))
    except NotImplementedError:
        tqdm.write(f"note: {generator.name} does not state what its edits ask for "
                   "(target_values / unedited_conditions): no edit-success rows")
        return None
