"""What goes into every result file so a run can be reproduced: versions, git hash,
environment, seeds and the resolved configuration."""

from __future__ import annotations

import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

import bench
from bench.contract.results import RunRecord

PACKAGES = ["torch", "torchvision", "numpy", "piq", "safetensors", "pillow"]


def cpu_name() -> str:
    """The CPU's model, and whether it has AVX-512 BF16 (timings differ twofold without it)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 platform.machine())
    return model + (" (AVX-512 BF16)" if "avx512_bf16" in info else " (no AVX-512 BF16)")


CHANGED_LISTED = 50  # changed files named in a result; more are counted


def git_state() -> dict:
    """Commit of the checkout the bench package runs from, if any, whether tracked files
    differ from it, and which (a run made by `results/make.sh` after another target's
    report sees that report's tables changed: code or only results, the list tells)."""
    root = Path(bench.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=5).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    changed = [line[3:] for line in status if line.strip()]
    state = {"commit": commit, "dirty": bool(changed)}
    if changed:
        state["changed"] = changed[:CHANGED_LISTED] + ([f"... {len(changed) - CHANGED_LISTED} more"]
                                                       if len(changed) > CHANGED_LISTED else [])
    return state


def package_versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def environment(device: torch.device) -> dict:
    env = {"python": sys.version.split()[0], "platform": platform.platform(),
           "machine": platform.machine(), "cpu": cpu_name(), "device": str(device),
           "torch_threads": torch.get_num_threads(),
           "packages": package_versions()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def run_metadata(config: dict, names: dict, plugins: dict, device: torch.device, command: str,
                 git: dict | None = None) -> RunRecord:
    """The run's provenance (the runner adds what the run did); `git`: the state taken
    when the run started (the tree may change while a long run goes on)."""
    return RunRecord(
        schema_version=bench.RESULT_SCHEMA_VERSION,
        harness_version=bench.__version__,
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        command=command,
        git=git or git_state(),
        environment=environment(device),
        seed=config["seed"],
        config=config,
        selected=names,
        plugins=plugins,
        data={},
    )


def peak_memory_mb(device: torch.device) -> dict:
    """Peak resident memory of this process (and peak allocated accelerator memory)."""
    try:
        import resource
    except ImportError:  # Windows
        peak = {}
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        peak = {"host_rss_mb": round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)}
    if device.type == "cuda":
        peak["cuda_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return peak
