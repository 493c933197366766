"""L-inf projected gradient descent, the core of most defenses and of adversarial
fine-tuning. Images live in [-1, 1]; every step is projected to the eps-ball around
the clean image and to [-1, 1].

The loss function returns one value per sample, so samples (image x target pairs,
flattened into the batch) are optimised independently and in one batched pass. It may
instead return an iterable of such per-sample terms whose sum is the loss (an expectation
over random transformations): each term is back-propagated before the next is built, so
memory holds one term's graph, not all of them.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from bench.contract.params import Budget, Count, Positive
from bench.contract.plugins import DEFAULT_EPS

ATTACK_PRECISIONS = ("fp32", "bf16")
_ATTACK_DTYPE: contextvars.ContextVar = contextvars.ContextVar("bench_attack_dtype", default=None)


@contextlib.contextmanager
def attack_precision(precision: str):
    """Inside, the forward and backward passes of sign-gradient steps (`sign_step_passes`)
    run in `precision`: "fp32", or "bf16" under autocast. A sign step needs the
    gradient's sign only, and bf16 keeps it (`bench perf` counts the signs that agree)."""
    token = _ATTACK_DTYPE.set(torch.bfloat16 if precision == "bf16" else None)
    try:
        yield
    finally:
        _ATTACK_DTYPE.reset(token)


def sign_step_passes(device: torch.device):
    """The autocast context of a sign-gradient step's loss on `device` (see attack_precision)."""
    dtype = _ATTACK_DTYPE.get()
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Clip to the L-inf ball of radius eps around x, then to the image range [-1, 1]."""
    return torch.max(torch.min(x_adv, x + eps), x - eps).clamp(-1.0, 1.0)


def random_start(x: torch.Tensor, eps: float, seed: int | None) -> torch.Tensor:
    """x + U(-eps, eps), drawn on the CPU from `seed` so every device gives the same start."""
    rng = torch.Generator().manual_seed(seed) if seed is not None else None
    noise = torch.rand(x.shape, generator=rng, dtype=torch.float32) * 2 - 1
    return project(x + eps * noise.to(x.device, x.dtype), x, eps)


def pgd(x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor], eps: float,
        step_size: float, steps: int, x_init: torch.Tensor | None = None,
        maximize: bool = True) -> torch.Tensor:
    """Sign-gradient ascent (or descent) of loss_fn(x_adv) -> per-sample losses.

    Starts from x_init (e.g. `random_start(x, eps, seed)`) or from x itself. Returns the
    perturbed images, detached, with |x_adv - x| <= eps and in [-1, 1].
    """
    x = x.detach()
    x_adv = x.clone() if x_init is None else project(x_init.detach(), x, eps)
    direction = 1.0 if maximize else -1.0
    for _ in range(steps):
        x_adv.requires_grad_(True)
        grad = loss_gradient(loss_fn, x_adv)
        x_adv = project(x_adv.detach() + direction * step_size * grad.sign(), x, eps)
    return x_adv.detach()


def loss_gradient(loss_fn: Callable, x_adv: torch.Tensor) -> torch.Tensor:
    """The gradient at x_adv of the summed loss, term by term where loss_fn returns terms
    (each term's passes under `sign_step_passes`, its graph freed before the next)."""
    with sign_step_passes(x_adv.device):
        terms = iter(as_terms(loss_fn(x_adv)))
    grad = None
    while True:
        with sign_step_passes(x_adv.device):
            term = next(terms, None)
        if term is None:
            return grad
        (term_grad,) = torch.autograd.grad(term.float().sum(), x_adv)
        grad = term_grad if grad is None else grad + term_grad


def as_terms(loss: torch.Tensor | Iterable[torch.Tensor]) -> Iterable[torch.Tensor]:
    return [loss] if isinstance(loss, torch.Tensor) else loss


def summed(losses: list) -> torch.Tensor | Iterable[torch.Tensor]:
    """The sum of losses: one tensor where each is one, else all their terms in turn."""
    if all(isinstance(loss, torch.Tensor) for loss in losses):
        return sum(losses)
    return itertools.chain.from_iterable(as_terms(loss) for loss in losses)


def per_sample_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each sample: (N, ...) x (N, ...) -> (N,)."""
    return (a.float() - b.float()).pow(2).flatten(1).mean(1)


def chunked(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor, batch_size: int,
            device: torch.device | None = None) -> torch.Tensor:
    """fn applied to aligned slices of the tensors (dim 0), results concatenated.

    With `device`, each slice moves there and each result comes back to the CPU, so
    only one batch at a time occupies the accelerator.
    """
    n = tensors[0].size(0)
    outs = []
    for i in range(0, n, batch_size):
        part = [t[i:i + batch_size] for t in tensors]
        if device is not None:
            outs.append(fn(*(t.to(device) for t in part)).cpu())
        else:
            outs.append(fn(*part))
    return torch.cat(outs) if outs else tensors[0][:0]


def device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def flatten_targets(x: torch.Tensor, conditions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (N, ...) and conditions (T, N, ...) -> both flattened to (T*N, ...), target-major."""
    t = conditions.size(0)
    xs = x.unsqueeze(0).expand(t, *x.shape).reshape(t * x.size(0), *x.shape[1:])
    return xs, conditions.reshape(-1, *conditions.shape[2:])


def output_distortion(generator: torch.nn.Module) -> Callable:
    """The Disrupting objective: per-sample MSE(G(x_adv, c), y)."""
    return lambda x_adv, c, y: per_sample_mse(generator(x_adv, c), y)


@dataclass
class PGDSettings:
    """The per-image PGD of Disrupting and the defenses built on it (eps on [-1, 1]);
    a defense's `Params` extends it with its own settings."""
    eps: Budget = DEFAULT_EPS
    step_size: Positive = 0.01
    steps: Count = 10
    rand_init: bool = True
    batch_size: Count = 32  # (image, target) pairs per forward pass


def per_target_pgd(x: torch.Tensor, generator: torch.nn.Module, conditions: torch.Tensor, seed: int,
                   settings: PGDSettings, distortion: Callable | None = None) -> torch.Tensor:
    """One perturbation per (image, target): PGD maximising distortion(x_adv, c, y) -> (n,),
    with y = G(x, c) (default: MSE(G(x_adv, c), y)). All pairs run batched on the
    generator's device. x (N, ...) and conditions (T, N, ...) on the CPU -> (T, N, ...)."""
    s = settings
    distortion = distortion or output_distortion(generator)
    xs, cs = flatten_targets(x, conditions)
    x_init = random_start(xs, s.eps, seed) if s.rand_init else xs

    def attack(xb, cb, ib):
        with torch.no_grad():
            y = generator(xb, cb)
        return pgd(xb, lambda xa: distortion(xa, cb, y), s.eps, s.step_size, s.steps, ib)

    x_adv = chunked(attack, xs, cs, x_init, batch_size=s.batch_size, device=device_of(generator))
    return x_adv.view(conditions.size(0), *x.shape)


def joint_pgd(x: torch.Tensor, generator: torch.nn.Module, conditions: torch.Tensor, seed: int,
              settings: PGDSettings, distortion: Callable | None = None) -> torch.Tensor:
    """One perturbation per image: PGD maximising the sum of distortion(x_adv, c, y) over
    all T targets (one protected copy of a photo against every edit), returned for each
    target: (T, N, ...). Arguments as for `per_target_pgd`."""
    s = settings
    distortion = distortion or output_distortion(generator)
    x_init = random_start(x, s.eps, seed) if s.rand_init else x

    def attack(xb, ib, *cb):
        with torch.no_grad():
            ys = [generator(xb, c) for c in cb]
        return pgd(xb, lambda xa: summed([distortion(xa, c, y) for c, y in zip(cb, ys)]), s.eps, s.step_size, s.steps,
                   ib)

    protected = chunked(attack, x, x_init, *conditions.unbind(0), batch_size=max(1, s.batch_size // conditions.size(0)),
                        device=device_of(generator))
    return for_every_target(protected, conditions)


def check_fitted_size(defense: str, fitted: torch.Tensor | None, x: torch.Tensor) -> None:
    """A fitted defense protects images of the size it was fitted at, and only once fitted."""
    from bench.contract.errors import ConfigError

    if fitted is None:
        raise ConfigError(f"{defense} has not been fitted")
    if fitted.shape[-2:] != x.shape[-2:]:
        raise ConfigError(f"{defense} was fitted at {tuple(fitted.shape[-2:])} px, the images are "
                          f"{tuple(x.shape[-2:])}: fit it at this resolution")


def for_every_target(protected: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
    """One protected image per image (N, ...) -> the same for each target: (T, N, ...)."""
    return protected.unsqueeze(0).expand(conditions.size(0), *protected.shape)
