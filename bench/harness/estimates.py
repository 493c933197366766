"""How long a plan's steps should take on this machine, for the dry run, the run's
opening line and its progress bar (weighted by these estimates, so that a ten-minute
fit moves it as much as ten minutes of cells).

A step's time is taken to grow with its passes over images: the images it handles times
the repeats its plugin's settings ask of each (a fit: the faces it uses times its epochs;
a PGD defense: its steps times its draws over random transforms). Its estimate is the
median seconds per image pass of the cached steps of its signature (kind, plugin,
generators, device, and for a cell its bypass and metrics) on this machine, times its own
image passes; where this machine has none, the reference run's (`timings.json` beside
the released fits, the run that made them; used for runs of its profile and resolution)
scaled by how much slower this machine runs a fixed probe than the reference machine
did; failing both, a cell's with any bypass, then with its metrics in any scenario, then
by kind and plugin (for a cell, its scenario) alone.
"""

from __future__ import annotations

import functools
import json
import statistics
import time

import torch
import torch.nn.functional as F

from bench.harness.plan import STEP_KINDS

TIMINGS = "timings.json"
UNIT = "image pass"  # what a timings file's seconds_per_pass are counted in: one image by one repeat
# the settings that repeat a step's work over every image: fine-tuning epochs, PGD steps,
# a generator's training iterations, draws of an expectation over random transforms
REPEATS = ("epochs", "steps", "iterations", "eot_samples")
CACHED_STEP_SECONDS = 0.05  # reading a cached value: next to nothing


def signature(kind: str, parts: dict) -> tuple:
    """(kind, plugin, generators, device, metrics) of a step from its key parts: what its
    time per image pass depends on. A cell's plugin is its scenario and bypass
    ("standard/comdefend": purifying costs more than JPEG), and its metrics are named
    (FID's network dwarfs the rest); a generator behind a bypass (the leakage
    scenario's) is named with it: "stargan<lora"."""
    device = parts.get("device")
    plugin = next((parts[p].get("name") for p in ("bypass", "defense") if isinstance(parts.get(p), dict)), None)
    if kind == "cell" and isinstance(parts.get("labels"), list):
        generator, _, bypass, scenario = parts["labels"]
        metrics = "+".join(sorted(parts.get("metrics") or {}))
        return kind, f"{scenario.split(':')[0]}/{bypass}", generator, device, metrics
    if isinstance(parts.get("generators"), list):
        return kind, plugin, "+".join(generator_name(g) or "?" for g in parts["generators"]), device, None
    return kind, plugin, generator_name(parts.get("generator")), device, None


def lookups(full: tuple) -> list[tuple]:
    """The keys a step's estimate is looked up by, most specific first: its signature;
    for a cell the same with any bypass (a bypass never seen before still costs about
    what the others do), then its metrics in any scenario (FID's network or none of it
    matters more than the scenario); then kind and plugin (for a cell, its scenario)."""
    kind, plugin = full[:2]
    if kind != "cell":
        return [full, full[:2]]
    scenario = plugin.split("/")[0]
    return [full, (kind, scenario, *full[2:]), (kind, "*", *full[2:]), (kind, scenario)]


def image_passes(parts: dict, clean_parts) -> int | None:
    """How many image passes a step makes: the images of its own split (a plugin's
    `faces` setting may take fewer of them) times the `REPEATS` its plugin's settings
    ask of each, or for a cell its clean step's images (`clean_parts`: a clean step's
    key -> its parts, None where unknown)."""
    if "clean" in parts:
        parts = clean_parts(parts["clean"]) or {}
    images = parts.get("images")
    n = images.get("n") if isinstance(images, dict) else None
    if not (isinstance(n, int) and n > 0):
        return None
    for plugin in ("bypass", "defense"):
        params = (parts.get(plugin) or {}).get("params") if isinstance(parts.get(plugin), dict) else None
        if not isinstance(params, dict):
            continue
        faces = params.get("faces")
        n = min(n, faces) if isinstance(faces, int) and faces > 0 else n
        for repeat in REPEATS:
            times = params.get(repeat)
            n = n * times if isinstance(times, int) and times > 0 else n
    return n


def generator_name(identity) -> str | None:
    """A generator's name in a signature, with the bypass it runs behind, if any."""
    if not isinstance(identity, dict):
        return None
    behind = ((identity.get("bypassed_by") or {}).get("bypass") or {}).get("name")
    return identity.get("name", "?") + (f"<{behind}" if behind else "")


Sample = tuple[float, int | None]  # (seconds, image passes)


def medians(samples: dict[tuple, list[Sample]]) -> dict[tuple, dict]:
    """By each lookup key of the signatures: the median seconds, and the median seconds
    per image pass over the samples whose passes are known (None where none are)."""
    grouped: dict[tuple, list[Sample]] = {}
    for full, values in samples.items():
        for key in lookups(full):
            grouped.setdefault(key, []).extend(values)
    return {key: {"seconds": statistics.median(s for s, _ in values),
                  "seconds_per_pass": statistics.median(per) if (per := [s / n for s, n in values if n]) else None}
            for key, values in grouped.items()}


def scaled(entry: dict, passes: int | None) -> float:
    """An entry's estimate for a step of `passes` image passes."""
    if passes and entry.get("seconds_per_pass") is not None:
        return entry["seconds_per_pass"] * passes
    return entry["seconds"]


def cached_samples(cache, per_kind: int = 400) -> dict[tuple, list[Sample]]:
    """Seconds and image passes of up to `per_kind` cached steps of each kind, by signature."""
    samples: dict[tuple, list[Sample]] = {}
    clean_parts = functools.lru_cache(maxsize=None)(functools.partial(manifest_parts, cache, "clean"))  # shared by cells
    for kind in STEP_KINDS:
        folder = cache.root / kind
        if not folder.is_dir():
            continue
        for i, path in enumerate(folder.glob("*/*/manifest.json")):
            if i >= per_kind:
                break
            try:
                manifest = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            info, parts = manifest.get("info", {}), manifest.get("parts", {})
            took = info.get("seconds", info.get("fit_seconds"))
            if took is not None and "released" not in info:
                samples.setdefault(signature(kind, parts), []).append((float(took), image_passes(parts, clean_parts)))
    return samples


def manifest_parts(cache, kind: str, key: str) -> dict | None:
    return (cache.manifest(kind, key) or {}).get("parts")


def probe_seconds(repeats: int = 3) -> float:
    """Seconds this machine takes for a fixed convolution forward and backward (the bulk
    of every step), the median of `repeats`."""
    with torch.random.fork_rng(devices=[]):  # the run's own random stream stays as it was
        x = torch.randn(4, 64, 64, 64, requires_grad=True)
        weight = torch.randn(64, 64, 3, 3, requires_grad=True)
    F.conv2d(x, weight, padding=1).square().mean().backward()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(2):
            F.conv2d(x, weight, padding=1).square().mean().backward()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


class Estimator:
    """Estimated seconds of steps: this machine's history first, then the reference's.
    `plan`: the run's plan, whose clean steps tell its cells' images."""

    def __init__(self, cache, config: dict, plan=None):
        from bench.harness.released import released_folder

        self.cache, self.config = cache, config
        self.clean_parts = {s.key: s.parts for s in plan.steps.values() if s.kind == "clean"} if plan else {}
        self.local = medians(cached_samples(cache))
        self.reference_file = released_folder() / TIMINGS
        self.sources: dict[str, int] = {"this machine": 0, "reference": 0, "none": 0}

    @functools.cached_property
    def reference(self) -> tuple[dict, float, str]:
        """The reference run's entries, this machine's slowdown against its machine, and
        that machine's CPU; nothing where there is no usable timings file, or it was made
        with another profile or resolution, or counts in another unit."""
        try:
            timings = json.loads(self.reference_file.read_text())
            if (timings["profile"], timings["resolution"], timings.get("unit")) != \
                    (self.config["profile"], self.config["resolution"], UNIT):
                return {}, 1.0, ""
            table = {tuple(entry["signature"]): {"seconds": float(entry["seconds"]),
                                                 "seconds_per_pass": entry.get("seconds_per_pass")}
                     for entry in timings["steps"]}
            return table, probe_seconds() / float(timings["probe_seconds"]), str(timings.get("cpu", ""))
        except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
            return {}, 1.0, ""

    def cached(self, step) -> bool:
        return self.cache.manifest(step.kind, step.key) is not None

    def passes(self, step) -> int | None:
        def clean_parts(key):
            return self.clean_parts.get(key) or manifest_parts(self.cache, "clean", key)

        return image_passes(step.parts, clean_parts)

    def seconds(self, step) -> float | None:
        """The step's estimate (next to nothing where the cache or a release holds it)."""
        if self.cached(step):
            return CACHED_STEP_SECONDS
        full, passes = signature(step.kind, step.parts), self.passes(step)
        for key in lookups(full):
            if key in self.local:
                self.sources["this machine"] += 1
                return scaled(self.local[key], passes)
            table, slowdown, _ = self.reference
            if key in table:
                self.sources["reference"] += 1
                return scaled(table[key], passes) * slowdown
        self.sources["none"] += 1
        return None

    def of(self, steps) -> dict[str, float | None]:
        return {step.id: self.seconds(step) for step in steps}

    def note(self) -> str:
        """Where the estimates came from, for people."""
        parts = []
        if self.sources["this machine"]:
            parts.append(f"{self.sources['this machine']} steps from this machine's past speed")
        if self.sources["reference"]:
            _, slowdown, cpu = self.reference
            parts.append(f"{self.sources['reference']} from the reference machine's times ({cpu}) x{slowdown:.2f}, "
                         "by this machine's probe")
        if self.sources["none"]:
            parts.append(f"{self.sources['none']} steps with nothing to go by")
        return "; ".join(parts)


def reference_timings(record, cache) -> dict:
    """The timings file of a reference run (its `run.json` record): each signature's
    median seconds and seconds per image pass over the steps the run computed itself,
    with its profile, resolution, unit and CPU, and this machine's probe time."""
    samples: dict[tuple, list[Sample]] = {}
    for step in record.plan["steps"]["list"]:
        if step["status"] != "ran" or step["seconds"] is None:
            continue
        kind, key = step["id"].split("/")
        parts = manifest_parts(cache, kind, key) or {}
        passes = image_passes(parts, functools.partial(manifest_parts, cache, "clean"))
        samples.setdefault(signature(kind, parts), []).append((step["seconds"], passes))
    table = medians(samples)
    return {"profile": record.profile, "resolution": record.config["resolution"], "unit": UNIT,
            "cpu": record.environment.get("cpu"), "probe_seconds": probe_seconds(),
            "steps": [{"signature": list(key), "seconds": round(entry["seconds"], 3),
                       "seconds_per_pass": None if entry["seconds_per_pass"] is None
                       else float(f"{entry['seconds_per_pass']:.5g}")}  # 5 digits: a pass can take 1e-5 s
                      for key, entry in sorted(table.items(), key=lambda item: tuple(str(p) for p in item[0]))]}
