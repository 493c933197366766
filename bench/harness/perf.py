"""`bench perf`: how fast the inner loop runs against what the device can do.

Measured in one process, on the chosen device:
- the peak: an fp32 matmul of two square matrices (GFLOP/s);
- for each generator, one PGD step as every defense, adversarial fine-tuning and
  leakage protection takes it (forward, MSE to the clean output, backward to the input)
  on a batch of images: its FLOPs (torch.utils.flop_counter), its GFLOP/s and their
  share of the peak, and images per second.
It prints a table and writes JSON, so that a change is judged by ratios measured on the
same machine in the same run.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.contract.registry import registry
from bench.harness.inputs import load_generator
from bench.harness.provenance import git_state


def timed(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of `fn()` over `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def matmul_peak(device: torch.device, size: int, repeats: int) -> dict:
    a, b = (torch.randn(size, size, device=device) for _ in range(2))
    seconds = timed(lambda: a @ b, repeats, device)
    return {"size": size, "seconds": seconds, "gflops": 2 * size ** 3 / seconds / 1e9}


def pgd_step(generator, x: torch.Tensor, c: torch.Tensor):
    """One PGD step's work: the loss of G(x_adv, c) against G(x, c), and its gradient."""
    with torch.no_grad():
        y = generator(x, c)

    def step():
        x_adv = x.detach().requires_grad_(True)
        ((generator(x_adv, c) - y) ** 2).mean().backward()  # the weights are frozen: the input's gradient only
        return x_adv.grad

    return step


def generator_speed(config: dict, name: str, device: torch.device, batch: int, repeats: int,
                    peak: float) -> dict:
    generator = load_generator(config, name, device)
    size = config["resolution"]
    torch.manual_seed(0)
    x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    labels = torch.randint(0, 2, (batch, len(generator.attribute_names))).float()
    c = generator.targets(labels)[0].to(device)
    step = pgd_step(generator, x, c)
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    seconds = timed(step, repeats, device)
    gflops = flops / seconds / 1e9
    return {"generator": name, "weights_sha256": generator.identity()["weights_sha256"], "batch": batch,
            "resolution": size, "gflop_per_step": flops / 1e9,
            "seconds_per_step": seconds, "gflops": gflops, "share_of_peak": gflops / peak,
            "images_per_second": batch / seconds}


def measure(config: dict, generators: str, device: torch.device, batch: int = 32, repeats: int = 5,
            matmul_size: int = 2048) -> dict:
    peak = matmul_peak(device, matmul_size, repeats)
    rows = [generator_speed(config, name, device, batch, repeats, peak["gflops"])
            for name in registry("generators").resolve(generators)]
    return {"command": "bench perf", "git": git_state(), "device": str(device), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "machine": platform.machine(), "profile": config["profile"],
            "config": {k: config[k] for k in ("resolution", "generators")}, "matmul": peak, "pgd_step": rows}


def table(result: dict) -> str:
    import pandas as pd

    frame = pd.DataFrame(result["pgd_step"]).set_index("generator")
    frame = frame[["gflop_per_step", "images_per_second", "gflops", "share_of_peak"]]
    frame.columns = ["GFLOP per step", "images/s", "GFLOP/s", "share of peak"]
    head = (f"device {result['device']}, {result['threads']} threads, torch {result['torch']}; "
            f"fp32 matmul {result['matmul']['size']}x{result['matmul']['size']}: "
            f"{result['matmul']['gflops']:.0f} GFLOP/s (the peak)\n"
            f"PGD step (forward, MSE to the clean output, backward to the input), batch "
            f"{result['pgd_step'][0]['batch'] if result['pgd_step'] else '-'}:\n")
    return head + frame.to_markdown(floatfmt=".2f")


def write(result: dict, output: Path) -> Path:
    from bench.contract.io import atomic_write_json

    path = output / "perf.json"
    atomic_write_json(path, result)
    return path
