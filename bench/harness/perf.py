"""`bench perf`: how fast the work runs against what the device can do.

Measured in one process, on the chosen device:
- the peak: a matmul of two square matrices in fp32 and bf16 (and fp16 on CUDA), GFLOP/s;
- for each generator, one PGD step as every defense, adversarial fine-tuning and
  leakage protection takes it (forward, MSE to the clean output, backward to the input)
  on a batch of images: its FLOPs (torch.utils.flop_counter), GFLOP/s and share of the
  peak, images per second, in float32 and under bf16 autocast (`attack_precision`),
  with the share of the gradient's signs that agree; on CUDA also inference (forward
  only) in float32 and under the runs' float16 AMP;
- on CUDA, the CUDA path against the CPU on a few images: each generator's outputs
  (fp32 and AMP) and its input gradient;
- a small copy of a run (by default the README's main job: every defense, LoRA, every
  generator) with the data, the fine-tuning and the defenses' fits all shrunk by
  `scale`: run cold in a fresh cache, then warm; every step's seconds, the images per
  second of each protection, fit and scoring, the cold/warm ratio, peak memory, and
  each step's time projected to the profile's sizes (`scale` times the work).
It prints tables and writes JSON, so that a change is judged by ratios measured on the
same machine in the same run.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.contract.registry import registry
from bench.contract.results import RunRecord
from bench.harness.inputs import load_generator, make_plugin, variants
from bench.harness.provenance import git_state, peak_memory_mb
from bench.toolkit.attacks import DEFAULT_EPS, device_of, random_start
from bench.toolkit.device import autocast


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of `fn()` over `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def matmul_peak(device: torch.device, size: int, repeats: int, dtype: torch.dtype = torch.float32) -> dict:
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    seconds = timed(lambda: a @ b, repeats, device)
    return {"size": size, "dtype": str(dtype).removeprefix("torch."), "seconds": seconds,
            "gflops": 2 * size ** 3 / seconds / 1e9}


# --- the inner loop ----------------------------------------------------------------------
def pgd_step(generator, x: torch.Tensor, c: torch.Tensor, precision=contextlib.nullcontext):
    """One PGD step's work: the loss of G(x_adv, c) against G(x, c) (made in float32, as
    runs make it), and its gradient; the step's passes under `precision`. x_adv is a
    random start in the eps-ball, as in runs (at x itself the float32 gradient is zero)."""
    with torch.no_grad():
        y = generator(x, c)
    start = random_start(x, DEFAULT_EPS, seed=0)

    def step():
        x_adv = start.detach().requires_grad_(True)
        with precision():
            loss = ((generator(x_adv, c).float() - y.float()) ** 2).mean()
        loss.backward()  # the weights are frozen: the input's gradient only
        return x_adv.grad

    return step


def inference(generator, x: torch.Tensor, c: torch.Tensor, precision=contextlib.nullcontext):
    def forward():
        with torch.inference_mode(), precision():
            return generator(x, c)

    return forward


def generator_inputs(generator, size: int, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.rand(batch, 3, size, size) * 2 - 1
    labels = torch.randint(0, 2, (batch, len(generator.attribute_names))).float()
    return x.to(device), generator.targets(labels)[0].to(device)


def flops_of(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def generator_speed(config: dict, name: str, device: torch.device, batch: int, repeats: int,
                    peaks: dict) -> dict:
    generator = load_generator(config, name, device)
    x, c = generator_inputs(generator, config["resolution"], batch, device)
    step, bf16_step = pgd_step(generator, x, c), pgd_step(generator, x, c, autocast_to(device, torch.bfloat16))
    flops = flops_of(step)
    row = {"generator": name, "weights_sha256": generator.identity()["weights_sha256"], "batch": batch,
           "resolution": config["resolution"], "gflop_per_step": flops / 1e9}
    row.update(speed_of(step, flops, batch, repeats, device, peaks["fp32"], "fp32"))
    # attack_precision=bf16: the same step under bf16 autocast, and how many of its
    # gradient's signs (all a sign step uses) agree with float32's
    row.update(speed_of(bf16_step, flops, batch, repeats, device, peaks["bf16"], "bf16_autocast"))
    fp32_grad, bf16_grad = step(), bf16_step()
    agree = fp32_grad.sign() == bf16_grad.sign()
    row["bf16_sign_agreement"] = float(agree.float().mean())
    # where signs differ the gradient is small: the share of its magnitude they carry
    row["bf16_agreeing_gradient_mass"] = float(fp32_grad.abs()[agree].sum() / fp32_grad.abs().sum())
    if device.type == "cuda":
        forward_flops = flops_of(inference(generator, x, c))
        row.update(speed_of(inference(generator, x, c), forward_flops, batch, repeats, device, peaks["fp32"],
                            "inference_fp32"))
        row.update(speed_of(inference(generator, x, c, lambda: autocast(device)), forward_flops, batch, repeats,
                            device, peaks["fp16"], "inference_amp"))
    return row


def autocast_to(device: torch.device, dtype: torch.dtype):
    return lambda: torch.autocast(device.type, dtype=dtype)


def speed_of(fn, flops: int, batch: int, repeats: int, device: torch.device, peak: float, tag: str) -> dict:
    seconds = timed(fn, repeats, device)
    gflops = flops / seconds / 1e9
    prefix = "" if tag == "fp32" else f"{tag}_"
    return {f"{prefix}seconds_per_step": seconds, f"{prefix}gflops": gflops,
            f"{prefix}share_of_peak": gflops / peak, f"{prefix}images_per_second": batch / seconds}


# --- the CUDA path against the CPU ------------------------------------------------------
def cuda_agreement(config: dict, name: str, device: torch.device, images: int = 4) -> dict:
    """Outputs (fp32 and AMP) and the PGD input gradient on `device` against the CPU."""
    cpu = torch.device("cpu")
    models = {d.type: load_generator(config, name, d) for d in (cpu, device)}
    x, c = generator_inputs(models["cpu"], config["resolution"], images, cpu)
    outputs, grads = {}, {}
    for kind, model in models.items():
        xd, cd = x.to(device_of(model)), c.to(device_of(model))
        with torch.no_grad():
            outputs[kind] = model(xd, cd).float().cpu()
        grads[kind] = pgd_step(model, xd, cd)().float().cpu()
    with torch.no_grad(), autocast(device):
        amp = models["cuda"](x.to(device), c.to(device)).float().cpu()
    a, b = grads["cpu"].flatten(), grads["cuda"].flatten()
    return {"generator": name, "images": images,
            "output_max_abs_fp32": float((outputs["cuda"] - outputs["cpu"]).abs().max()),
            "output_max_abs_amp": float((amp - outputs["cpu"]).abs().max()),
            "gradient_cosine": float(torch.nn.functional.cosine_similarity(a, b, dim=0)),
            "gradient_sign_agreement": float((a.sign() == b.sign()).float().mean())}


# --- a small copy of a run ---------------------------------------------------------------
def shrunk(value: int, scale: float) -> int:
    return max(1, math.ceil(value / scale))


def small_config(config: dict, scale: float) -> tuple[dict, dict]:
    """The profile with its data, fine-tuning images and defense fits divided by `scale`;
    and, per defense label, the fit-length parameter it shrank (name, full, small)."""
    small = copy.deepcopy(config)
    small["released_fits"] = False  # its cold run fits everything, as a first run of this size would
    for key in ("limit", "finetune_limit", "defense_fit_limit"):
        small[key] = max(2, shrunk(config[key], scale))
    lengths = {}
    labels = {**{n: n for n in registry("defenses").names()}, **variants(config, "defenses")}
    for label in labels:
        plugin = make_plugin("defenses", label, config)
        param = type(plugin).fit_length
        if param is None:
            continue
        full = getattr(plugin.params, param)
        small["defenses"].setdefault(label, {})[param] = shrunk(full, scale)
        lengths[label] = (param, full, shrunk(full, scale))
    return small, lengths


@contextlib.contextmanager
def cache_at(folder: Path):
    """BENCH_CACHE pointed at `folder` for the duration."""
    before = os.environ.get("BENCH_CACHE")
    os.environ["BENCH_CACHE"] = str(folder)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("BENCH_CACHE", None)
        else:
            os.environ["BENCH_CACHE"] = before


def time_matrix(config: dict, names: dict, scale: float, device: torch.device) -> dict:
    """Run the shrunk matrix cold (fresh cache) and warm (same cache): wall seconds, every
    step's seconds and throughput, and peak memory."""
    from bench.harness.runner import plan_run, run

    small, lengths = small_config(config, scale)
    with tempfile.TemporaryDirectory(prefix="bench-perf-") as tmp, cache_at(Path(tmp) / "cache"):
        plan, skipped = plan_run(small, names["defenses"], names["bypasses"], names["generators"])
        walls = {}
        for phase in ("cold", "warm"):
            started = time.perf_counter()
            run(small, Path(tmp) / phase, plan, skipped, command=f"bench perf ({phase} matrix)", fresh=True)
            walls[phase] = time.perf_counter() - started
        seconds = {s["id"]: s["seconds"] for s in RunRecord.read(Path(tmp) / "cold").plan["steps"]["list"]}
    steps = [step_speed(plan.steps[sid], seconds[sid], plan, config, small, lengths) for sid in plan.steps
             if seconds.get(sid) is not None]
    return {"names": names, "scale": scale, "sizes": {k: small[k] for k in ("limit", "finetune_limit",
                                                                            "defense_fit_limit")},
            "fit_lengths": {k: {"parameter": p, "profile": f, "small": s} for k, (p, f, s) in lengths.items()},
            "cold_seconds": walls["cold"], "warm_seconds": walls["warm"],
            "cold_to_warm": walls["cold"] / walls["warm"],
            "projected_steps_seconds": sum(s["projected_seconds"] for s in steps),
            "peak_memory": peak_memory_mb(device), "steps": steps}


def step_speed(step, seconds: float, plan, config: dict, small: dict, lengths: dict) -> dict:
    """A step's work, its rate and its time projected to the profile's sizes."""
    task = step.task
    generator = task.get("generator")
    targets = len(plan.target_names[generator]) if generator else 0
    if step.kind == "defense_fit":
        label = task["defense"]
        param, full, small_value = lengths.get(label, ("(not scaled)", 1, 1))
        work, unit, factor = small_value, param, full / small_value
    elif step.kind == "fit":
        work, unit = small["finetune_limit"], "fine-tuning images"
        factor = config["finetune_limit"] / small["finetune_limit"]
    else:
        work, unit = small["limit"] * targets, "image-target pairs"
        factor = config["limit"] / small["limit"]
    return {"kind": step.kind, "what": step.label, "seconds": seconds, "work": work, "unit": unit,
            "per_second": work / seconds if seconds else None, "projected_seconds": seconds * factor}


# --- the whole measurement -------------------------------------------------------------
def measure(config: dict, generators: str, device: torch.device, batch: int = 32, repeats: int = 5,
            matmul_size: int = 2048, matrix: dict | None = None, scale: float = 8) -> dict:
    peaks = {"fp32": matmul_peak(device, matmul_size, repeats),
             "bf16": matmul_peak(device, matmul_size, repeats, torch.bfloat16)}
    if device.type == "cuda":
        peaks["fp16"] = matmul_peak(device, matmul_size, repeats, torch.float16)
    gflops = {k: v["gflops"] for k, v in peaks.items()}
    names = registry("generators").resolve(generators)
    result = {"command": "bench perf", "git": git_state(), "device": str(device), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "machine": platform.machine(), "profile": config["profile"],
              "config": {k: config[k] for k in ("resolution", "generators")}, "matmul": peaks["fp32"],
              "peaks": peaks, "pgd_step": [generator_speed(config, n, device, batch, repeats, gflops) for n in names]}
    if device.type == "cuda":
        result["cuda_vs_cpu"] = [cuda_agreement(config, n, device) for n in names]
        result["device_name"] = torch.cuda.get_device_name(device)
        # TF32 makes "fp32" convolutions faster than the fp32 matmul peak suggests
        result["tf32"] = {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}
    if matrix is not None:
        result["matrix"] = time_matrix(config, matrix, scale, device)
    return result


def tables(result: dict) -> str:
    import pandas as pd

    peaks = ", ".join(f"{p['dtype']} {p['gflops']:.0f} GFLOP/s" for p in result.get("peaks", {}).values())
    lines = [f"device {result.get('device_name', result['device'])}, {result['threads']} threads, torch "
             f"{result['torch']}; matmul {result['matmul']['size']}x{result['matmul']['size']}: "
             f"{peaks or str(round(result['matmul']['gflops'])) + ' GFLOP/s'} (the peak)",
             f"PGD step (forward, MSE to the clean output, backward to the input), batch "
             f"{result['pgd_step'][0]['batch'] if result['pgd_step'] else '-'}:"]
    frame = pd.DataFrame(result["pgd_step"]).set_index("generator")
    columns = {"gflop_per_step": "GFLOP per step", "images_per_second": "images/s", "gflops": "GFLOP/s",
               "share_of_peak": "share of peak", "bf16_autocast_images_per_second": "bf16 images/s",
               "bf16_autocast_share_of_peak": "bf16 share of bf16 peak", "bf16_sign_agreement": "bf16 signs agreeing",
               "bf16_agreeing_gradient_mass": "their share of abs(gradient)",
               "inference_fp32_images_per_second": "inference images/s",
               "inference_amp_images_per_second": "AMP inference images/s"}
    frame = frame[[c for c in columns if c in frame]].rename(columns=columns)
    lines.append(frame.to_markdown(floatfmt=".2f"))
    if "cuda_vs_cpu" in result:
        lines += ["", "CUDA against the CPU (same images, same weights):",
                  pd.DataFrame(result["cuda_vs_cpu"]).set_index("generator").to_markdown(floatfmt=".2e")]
    if "matrix" in result:
        lines += ["", *matrix_lines(result["matrix"])]
    return "\n".join(lines)


def matrix_lines(m: dict) -> list[str]:
    import pandas as pd

    frame = pd.DataFrame(m["steps"])
    frame = frame[["what", "seconds", "work", "unit", "per_second", "projected_seconds"]]
    frame.columns = ["step", "seconds", "work", "unit", "work/s", f"x{m['scale']:g} (s)"]
    names = ", ".join(f"{k} {v}" for k, v in m["names"].items())
    sizes = ", ".join(f"{k} {v}" for k, v in m["sizes"].items())
    peak = ", ".join(f"{k} {v:.0f}" for k, v in m["peak_memory"].items())
    return [f"Small matrix ({names}; {sizes}; fits shrunk {m['scale']:g}x):",
            frame.to_markdown(index=False, floatfmt=".2f"),
            f"cold {m['cold_seconds']:.1f} s, warm {m['warm_seconds']:.1f} s (cold/warm {m['cold_to_warm']:.1f}); "
            f"steps projected to the profile's sizes: {m['projected_steps_seconds'] / 60:.1f} min; "
            f"peak memory (MB): {peak}"]


def write(result: dict, output: Path) -> Path:
    from bench.contract.io import atomic_write_json

    path = output / "perf.json"
    atomic_write_json(path, result)
    return path
