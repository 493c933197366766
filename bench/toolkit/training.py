"""Shared pieces of the generators' training recipes: data sampling, the training frame
(seeding, the resumable loop with checkpoints, loss logs, progress bars and previews,
the export of the trained weights) and losses several recipes use."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bench.contract.errors import WeightsError
from bench.contract.io import atomic_torch_save
from bench.contract.results import recent_mean  # noqa: F401  (the fits' final loss, as results record it)


class BatchSampler:
    """Random batches (with horizontal flips) from images held in memory as uint8."""

    def __init__(self, images_uint8: np.ndarray, labels: torch.Tensor, batch_size: int,
                 seed: int, flip: bool = True):
        self.images = torch.from_numpy(images_uint8).permute(0, 3, 1, 2).contiguous()
        self.labels = labels.float()
        self.batch_size = batch_size
        self.flip = flip
        self.rng = torch.Generator().manual_seed(seed)

    @classmethod
    def of_faces(cls, faceset, attributes: list[str], batch_size: int, seed: int) -> "BatchSampler":
        """Batches of a face set's images with their labels of `attributes`."""
        return cls(faceset.load_uint8(progress=True), faceset.labels(attributes), batch_size, seed)

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(self.images), (self.batch_size,), generator=self.rng)
        x = self.images[idx].float() / 127.5 - 1.0
        if self.flip:
            flip = torch.rand(self.batch_size, generator=self.rng) < 0.5
            x[flip] = x[flip].flip(-1)
        return x, self.labels[idx]

    def state(self) -> torch.Tensor:
        return self.rng.get_state()

    def restore(self, state: torch.Tensor) -> None:
        self.rng.set_state(state)


@dataclass
class TrainingRun:
    """A resumable training loop's bookkeeping in one output folder.

    `checkpoint.pt` (written atomically every `checkpoint_every` iterations) holds the
    modules, optimisers, sampler RNG state and iteration; `losses.jsonl` the loss log;
    `samples/` the progress images.
    """

    out_dir: Path
    total_iters: int
    checkpoint_every: int = 500
    log_every: int = 50

    def __post_init__(self):
        self.out_dir = Path(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint_path = self.out_dir / "checkpoint.pt"
        self.log_path = self.out_dir / "losses.jsonl"

    def resume(self, modules: dict, optimisers: dict, sampler: BatchSampler) -> int:
        """Restore the last checkpoint if there is one; return the iteration to start at."""
        if not self.checkpoint_path.exists():
            return 0
        try:
            state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
            for name, module in modules.items():
                module.load_state_dict(state["modules"][name])
            for name, opt in optimisers.items():
                opt.load_state_dict(state["optimisers"][name])
        except Exception as err:  # unreadable file or other architecture settings
            raise WeightsError(f"cannot resume from {self.checkpoint_path} (other settings, or damaged): "
                               f"{str(err).splitlines()[0]}; use another --out to start afresh") from None
        sampler.restore(state["sampler_rng"])
        torch.set_rng_state(state["torch_rng"])
        return int(state["iteration"])

    def save(self, iteration: int, modules: dict, optimisers: dict, sampler: BatchSampler) -> None:
        atomic_torch_save(self.checkpoint_path, {
            "iteration": iteration,
            "modules": {k: m.state_dict() for k, m in modules.items()},
            "optimisers": {k: o.state_dict() for k, o in optimisers.items()},
            "sampler_rng": sampler.state(),
            "torch_rng": torch.get_rng_state(),
        })

    def progress(self, start: int, desc: str) -> tqdm:
        return tqdm(range(start, self.total_iters), initial=start, total=self.total_iters,
                    desc=desc, unit="it", dynamic_ncols=True, mininterval=2.0)

    def log(self, iteration: int, losses: dict[str, float], started: float) -> None:
        row = {"iteration": iteration, "seconds": round(time.time() - started, 1),
               **{k: round(float(v), 5) for k, v in losses.items()}}
        with open(self.log_path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def loop(self, modules: dict, optimisers: dict, sampler, desc: str, step: Callable[[int], dict],
             preview: Callable[[int], None], shown: tuple[str, ...] | None = None) -> float:
        """The loop every generator recipe shares: resume from the last checkpoint, then
        for each remaining iteration `step(it)` (one training iteration, returning its
        losses), logging every `log_every` iterations (the `shown` losses on the progress
        bar; all by default) and, every `checkpoint_every` and at the end, a checkpoint
        and `preview(iteration)`. Returns when this session started."""
        start = self.resume(modules, optimisers, sampler)
        started, losses = time.time(), {}
        bar = self.progress(start, desc)
        for it in bar:
            losses.update(step(it))
            if (it + 1) % self.log_every == 0:
                self.log(it + 1, losses, started)
                bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items() if shown is None or k in shown})
            if (it + 1) % self.checkpoint_every == 0 or it + 1 == self.total_iters:
                self.save(it + 1, modules, optimisers, sampler)
                preview(it + 1)
        return started


@dataclass
class TrainingSetup:
    """What a recipe sets up for one training run: the modules and optimisers the
    checkpoints hold, the batch source (anything with `state()` and `restore(state)`),
    one iteration `step(it) -> losses`, a progress image `preview(path)`, the module
    to export (`trained`, a key of `modules`) and the losses on the progress bar."""

    modules: dict[str, torch.nn.Module]
    optimisers: dict[str, torch.optim.Optimizer]
    sampler: object
    step: Callable[[int], dict]
    preview: Callable[[Path], None]
    trained: str = "G"
    shown: tuple[str, ...] | None = None


def train_generator(name: str, params, faceset, out_dir: Path, export: Path | None, command: str,
                    set_up: Callable[[object], TrainingSetup]) -> torch.nn.Module:
    """The frame of every generator's `train_recipe`: seed torch's global generator with
    `params.seed` before anything draws from it, take the training split
    (`params.train_start` to `train_stop`), let the recipe set up its run on it
    (`set_up(train_set)`: it builds its modules in its own order of random draws), run
    the resumable loop (previews under `out_dir/samples/`), then return the trained
    module on the CPU, contiguous, in eval mode, exported to `export` if set."""
    torch.manual_seed(params.seed)
    train_set = faceset.subset(params.train_start, params.train_stop)
    setup = set_up(train_set)
    run = TrainingRun(out_dir, params.iters, params.checkpoint_every)

    def preview(iteration: int) -> None:
        setup.preview(run.out_dir / "samples" / f"{iteration:06d}.png")

    started = run.loop(setup.modules, setup.optimisers, setup.sampler, f"train {name}", setup.step, preview,
                       shown=setup.shown)
    trained = setup.modules[setup.trained].to("cpu", memory_format=torch.contiguous_format).eval()
    export_trained(trained, export, params, train_set, command, started)
    return trained


def edit_grid_preview(G: torch.nn.Module, faceset, start: int, attributes: list[str], device: torch.device,
                      count: int = 8) -> Callable[[Path], None]:
    """A `preview` of G's edits of the `count` faces from `start` (just after the
    training split): G runs in eval mode for it and goes back to its mode after."""
    fixed = faceset.subset(start, start + count)
    x, labels = fixed.load(), fixed.labels(attributes)

    def preview(path: Path) -> None:
        from bench.toolkit.figures import save_edit_grid

        was_training = G.training
        save_edit_grid(G.eval(), x.to(device), labels.to(device), path)
        G.train(was_training)

    return preview


def export_trained(model, export, params, train_set, command: str, started: float) -> None:
    """Save the trained generator with its recipe, data and command (if `export` is set)."""
    if export is not None:
        model.save(export, {"training": {**asdict(params), "data": train_set.identity(), "command": command,
                                         "seconds_this_session": round(time.time() - started)}})


def gradient_penalty(critic_out: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: (||d critic / d x_hat||_2 - 1)^2, averaged over the batch."""
    grad = torch.autograd.grad(critic_out.sum(), x_hat, create_graph=True)[0]
    norms = grad.flatten(1).norm(2, dim=1)
    return ((norms - 1) ** 2).mean()


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """Exponential moving average of the parameters (buffers are copied as they are)."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p, 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)
