"""`bench run`: plan the matrix, run the plan on an executor, write the results.

    plan     every cell (generator, defense, bypass, scenario) and the cached steps it
             needs, shared steps once (`bench.harness.plan`)
    resume   the run folder's `cells.jsonl` keeps the rows of the cells finished by an
             earlier, interrupted run of the same plan; only the rest is run
    execute  the executor runs the needed steps (`bench.harness.executors`); every cell's
             rows are appended to `cells.jsonl` as soon as the cell is scored
    finish   rows in plan order, fit costs (`costs.jsonl`), provenance (`run.json`),
             fitted states, loss curves and image grids

The rows of defense "none" score each bypass on clean inputs (its benign impact).
Scenarios: "standard" (defenses perturb against the original generator) and "leakage"
(an adaptive defender perturbs against the bypassed pipeline itself). Profiles may
declare variants of a plugin (`bypasses: {lora_r4: {plugin: lora, rank: 4}}`); they
run and are named like any plugin. The runner knows no method by name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from bench.contract.errors import ConfigError
from bench.contract.io import atomic_write_json, atomic_write_text, save_tensors, writable_folder
from bench.contract.registry import registry
from bench.contract.results import BYPASS_FIT, DEFENSE_FIT, STANDARD
from bench.harness.cache import default_cache_dir
from bench.harness.estimates import Estimator
from bench.harness.executors import LocalExecutor
from bench.harness.inputs import make_plugin, plugin_origins, usable_metrics
from bench.harness.plan import FIT_KINDS, Plan, attack_precision_of, build_plan, device_kind, resolve_names
from bench.harness.provenance import git_state, peak_memory_mb, run_metadata
from bench.harness.released import is_released, open_cache, released_root
from bench.harness.results import RowLog, figure_grids
from bench.harness.steps import Receipt
from bench.toolkit.device import resolve_device


def plan_run(config: dict, defenses, bypasses, generators) -> tuple[Plan, dict]:
    """The run's plan and the metrics it leaves out here (name -> why)."""
    names = resolve_names(config, defenses, bypasses, generators)
    metrics, skipped = usable_metrics(config)
    identities = {name: registry("metrics").get(name).identity() for name in metrics}
    return build_plan(config, names, metrics, identities), skipped


def cache_root(config: dict) -> tuple[Path, bool]:
    """The cache folder, and whether it is a temporary one (`cache: false`: every step is
    recomputed, and nothing is kept after the run)."""
    if config["cache"]:
        return writable_folder(default_cache_dir(), "the cache folder ($BENCH_CACHE)"), False
    return Path(tempfile.mkdtemp(prefix="bench-nocache-")), True


def run(config: dict, output_dir: Path, plan: Plan, skipped: dict, command: str = "", executor=None,
        fresh: bool = False) -> Path:
    """Run `plan` (from `plan_run`; `skipped`: the metrics it leaves out and why) into
    `output_dir`, resuming what the folder holds of it unless `fresh`."""
    started, git = time.time(), git_state()
    executor = executor or LocalExecutor()
    root, temporary = cache_root(config)
    if temporary and getattr(executor, "scheduler", None):
        raise ConfigError("--no-cache keeps values in a temporary folder of this machine, which a cluster's "
                          "workers cannot share; give the cluster a shared cache folder instead")
    log = RowLog(output_dir)
    if not fresh and log.finished(plan):  # its run.json (what ran, and how long) stays as it is
        print(f"{output_dir} holds this run, finished: nothing to do (--fresh runs it again)")
        return output_dir
    done = log.resume(plan, trust=not temporary, fresh=fresh)
    if done:
        print(f"resuming {output_dir}: the rows of {len(done)} of {len(plan.units)} cells and budgets are there")
    released = released_root(config)
    settings = {"config": config, "cache_root": str(root), "device_kind": device_kind(config),
                "attack_precision": attack_precision_of(config),
                "fit_attack_precision": attack_precision_of(config, fit=True),
                "released": str(released) if released else None}
    receipts: dict[str, Receipt] = {}
    units_of = {}
    for unit in plan.units:
        units_of.setdefault(unit.step, []).append(unit)
    needed = plan.needed(done)
    try:
        cache = open_cache(root, released)
        if line := released_line(plan, needed, cache):
            print(line)
        estimates = Estimator(cache, config, plan).of(plan.steps[sid] for sid in needed)
        print(opening_line(estimates))
        for receipt in executor.run(plan, needed, settings, estimates):
            receipts[receipt.step] = receipt
            for unit in units_of.get(receipt.step, []):
                if unit.name() not in done:
                    log.append(unit.name(), receipt.rows)
        log.finish(plan)
        finish(plan, output_dir, receipts, settings, skipped, command, git, started, executor.name)
    except KeyboardInterrupt:
        kept = len(set(log.rows) | set(done))
        where = "every finished step is in the cache" if not temporary else "nothing is cached (--no-cache)"
        raise KeyboardInterrupt(f"the rows of {kept} of {len(plan.units)} cells and budgets are kept in "
                                f"{output_dir}/ and {where}; run the same command to resume") from None
    finally:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
    return output_dir


def finish(plan: Plan, output_dir: Path, receipts: dict, settings: dict, skipped: dict, command: str, git: dict,
           started: float, executor: str) -> None:
    """Everything besides the rows: costs, provenance, fitted states, loss curves, grids."""
    config = settings["config"]
    cache = open_cache(settings["cache_root"], settings["released"])
    # the environment recorded is this process's; on a cluster the steps ran on workers of
    # the plan's device kind (run.json "plan"), and this process may have no GPU
    device = resolve_device(config["device"]) if executor == "local" else torch.device("cpu")
    manifests = {sid: (cache.manifest(step.kind, step.key) or {}).get("info", {})
                 for sid, step in plan.steps.items() if step.kind in FIT_KINDS}
    fits, costs = fit_records(plan, manifests, receipts)
    write_jsonl(output_dir / "costs.jsonl", costs)
    export_fitted(plan, cache, output_dir, config)
    for (g, b), info in fits.items():
        if "loss_curve" in info:
            atomic_write_json(output_dir / f"loss_curve_{g}_{b}.json", info["loss_curve"])
    record = run_metadata(config, plan.names, plan.plugins | {"generators": {
        g: plan.identities[g] for g in plan.names["generators"]}}, device, command, git)
    record.plugin_origins = plugin_origins(config, plan.names)
    record.official_weights = plan.official_weights
    record.data = {name: plan.identities.get(f"split:{split}")
                   for name, split in (("eval", "eval"), ("finetune", "finetune"), ("defense_fit", "defense"))}
    record.defense_fits = [defense_fit_record(plan.steps[sid], manifests[sid], receipts.get(sid))
                           for sid in plan.steps if plan.steps[sid].kind == "defense_fit"]
    record.bypass_costs = {label: make_plugin("bypasses", label, config).attack_cost()
                           for label in plan.names["bypasses"]}
    record.fits = {f"{g}/{b}": {k: v for k, v in info.items() if k != "loss_curve"} for (g, b), info in fits.items()}
    record.plan = {"id": plan.identity(), "executor": executor, "cache": settings["cache_root"],
                   "device_kind": settings["device_kind"], "threads": config.get("threads"),
                   "attack_precision": settings["attack_precision"],
                   "fit_attack_precision": settings["fit_attack_precision"],
                   "steps": step_summary(plan, receipts)}
    record.wall_seconds = round(time.time() - started, 2)
    record.peak_memory = peak_memory_mb(device)
    rows = [r for receipt in receipts.values() for r in receipt.rows]
    record.cache_hits = sum(r["cache_hit"] for r in rows)
    record.metrics = plan.metric_identities
    record.metrics_skipped = skipped
    # their specs too (direction, label), so that reading the run never needs the metric's code
    record.skipped_metric_specs = {name: registry("metrics").get(name).info() for name in skipped}
    metric_seconds: dict[str, float] = {}
    for receipt in receipts.values():
        for name, t in receipt.metric_seconds.items():
            metric_seconds[name] = metric_seconds.get(name, 0.0) + t
    record.metric_seconds = {name: round(t, 2) for name, t in metric_seconds.items()}
    record.finished_plan = plan.identity()
    save_grids(plan, cache, output_dir, config)
    record.write(output_dir)


def fit_records(plan: Plan, manifests: dict, receipts: dict) -> tuple[dict, list[dict]]:
    """Each (generator, bypass)'s fit info, and the costs table: one row per bypass fit
    and generator it serves, one per defense fit."""
    fits, costs = {}, []
    for sid, users in plan.fit_users.items():
        info, hit = manifests[sid], receipts[sid].cache_hit if sid in receipts else True
        for g, label in users:
            fits[(g, label)] = {**info, "cache_hit": hit}
            costs.append({"kind": BYPASS_FIT, "generator": g, "plugin": label, "scenario": STANDARD,
                          "train_seconds": info.get("train_seconds"), "trainable_params": info.get("trainable_params"),
                          "faces": info.get("faces"), "epochs": info.get("epochs"), "device": info.get("device"),
                          "seconds": info.get("seconds"), "cache_hit": hit, "released": is_released(info)})
    for sid, step in plan.steps.items():
        if step.kind == "defense_fit":
            record = defense_fit_record(step, manifests[sid], receipts.get(sid))
            costs.append({"kind": DEFENSE_FIT, "generator": ",".join(record["generators"]) or None,
                          "plugin": record["defense"], "scenario": record["scenario"], "train_seconds": None,
                          "trainable_params": None, "seconds": record["fit_seconds"], "cache_hit": record["cache_hit"],
                          "released": is_released(manifests[sid])})
    return fits, costs


def defense_fit_record(step, info: dict, receipt: Receipt | None) -> dict:
    seconds = info.get("fit_seconds", info.get("seconds"))
    return {**{k: v for k, v in info.items() if k not in ("seconds", "cache_hit")},
            "fit_seconds": round(seconds, 2) if seconds is not None else None,
            "cache_hit": receipt.cache_hit if receipt else True, "defense": step.task["defense"],
            "scope": step.task["scope"], "generators": [t["generator"] for t in step.task["targets"]],
            "scenario": step.task["scenario"], "against": step.task.get("against")}


def step_summary(plan: Plan, receipts: dict) -> dict:
    """Which steps ran, which came from the cache and which were fits released with bench
    (steps that no unscored cell needed are listed as not needed)."""
    counts: dict[str, dict] = {"ran": {}, "from_cache": {}, "released": {}}
    listed = []
    for sid, step in plan.steps.items():
        receipt = receipts.get(sid)
        status = step_status(receipt)
        if receipt is not None:
            counter = counts["from_cache" if status == "cache" else status]
            counter[step.kind] = counter.get(step.kind, 0) + 1
        listed.append({"id": sid, "what": step.label, "status": status,
                       "seconds": round(receipt.seconds, 3) if receipt else None})
    return {**counts, "list": listed}


def step_status(receipt: Receipt | None) -> str:
    if receipt is None:
        return "not needed"
    if receipt.released:
        return "released"
    return "cache" if receipt.cache_hit else "ran"


def released_line(plan: Plan, needed: list[str], cache) -> str | None:
    """One line naming how many fits this run reads from the release instead of fitting."""
    infos = [(cache.manifest(step.kind, step.key) or {}).get("info", {})
             for step in (plan.steps[sid] for sid in needed) if step.kind in FIT_KINDS]
    released = [info["released"] for info in infos if is_released(info)]
    if not released:
        return None
    commits = sorted({(made["commit"] or "?")[:7] for made in released})
    return (f"{len(released)} fits of this recipe come released with bench (made at {', '.join(commits)}): "
            "used instead of fitting; --refit fits them anew")


def opening_line(estimates: dict[str, float | None]) -> str:
    """How long the run should take here, and how many steps that leaves out."""
    known = [s for s in estimates.values() if s is not None]
    unknown = len(estimates) - len(known)
    if not known:
        return f"{len(estimates)} steps to run or read; no estimate of their time: nothing to go by on this machine"
    more = f", plus {unknown} steps with nothing to go by" if unknown else ""
    return f"{len(estimates)} steps to run or read; expected to take about {minutes(sum(known))} on this machine{more}"


def minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def export_fitted(plan: Plan, cache, output_dir: Path, config: dict) -> None:
    """Each fitted bypass state on its own (e.g. only the LoRA and gate tensors), reusable
    elsewhere, with what it was fitted on."""
    for sid, users in plan.fit_users.items():
        step = plan.steps[sid]
        found = cache.load(step.kind, step.key)
        if found is None:
            continue
        for g, label in users:
            save_tensors(output_dir / "fitted" / f"{g}_{label}.safetensors", found[0],
                         {"bypass": step.parts["bypass"], "generator": plan.identities[g],
                          "finetune_images": step.parts["images"], "seed": config["seed"]})


def save_grids(plan: Plan, cache, output_dir: Path, config: dict) -> None:
    for grid in figure_grids(plan, cache, output_dir, config):
        grid.save()


def write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


# --- dry run: what a run would do -------------------------------------------------------
def describe_plan(config: dict, plan: Plan, skipped: dict, output_dir: Path | None) -> str:
    """How many steps of each kind the run has, how many the cache holds already (and of
    those, how many are released fits), how many cells the run folder has scored, and an
    estimate of the time left (`bench.harness.estimates`)."""
    root, temporary = cache_root(config)
    cache = open_cache(root, released_root(config))
    done = RowLog(output_dir).peek(plan) if output_dir else set()
    needed = set(plan.needed(done))
    estimator = Estimator(cache, config, plan)
    lines = [f"plan {plan.identity()}: {len(plan.units)} row-making units over {len(plan.names['generators'])} "
             f"generators, {len(plan.steps)} steps (cache {root}{', temporary' if temporary else ''})"]
    if done:
        lines.append(f"{output_dir}: {len(done)} of {len(plan.units)} units already scored")
    lines.append(f"{'step':<12} {'total':>6} {'cached':>7} {'released':>9} {'to run':>7} {'estimate':>10}")
    total_estimate = 0.0
    for kind, count in plan.count().items():
        steps = [s for s in plan.steps.values() if s.kind == kind]
        manifests = [cache.manifest(s.kind, s.key) for s in steps]
        released = sum(m is not None and is_released(m.get("info", {})) for m in manifests)
        todo = [s for s, m in zip(steps, manifests) if m is None and s.id in needed]
        known = [g for g in (estimator.seconds(s) for s in todo) if g is not None]
        total_estimate += sum(known)
        estimate = f"{sum(known) / 60:.1f} min" if known else ("?" if todo else "-")
        cached = count - released - sum(m is None for m in manifests)
        lines.append(f"{kind:<12} {count:>6} {cached:>7} {released:>9} {len(todo):>7} {estimate:>10}")
    lines.append(f"estimated time left: {total_estimate / 60:.1f} min ({estimator.note() or 'nothing to run'})")
    for name, why in skipped.items():
        lines.append(f"metric {name} skipped: {why}")
    if temporary:
        shutil.rmtree(root, ignore_errors=True)
    return "\n".join(lines)


def find_unfinished(base: Path, plan: Plan) -> Path | None:
    """The newest run folder under `base` that holds an unfinished run of this very plan
    (so that the same command resumes it), or None."""
    if not base.is_dir():
        return None
    candidates = sorted((p for p in base.iterdir() if (p / "plan.json").exists()), key=os.path.getmtime, reverse=True)
    if not candidates:
        return None
    for folder in candidates:
        if RowLog(folder).unfinished_run_of(plan):
            return folder
    return None


def check_output(output_dir: Path) -> None:
    writable_folder(output_dir, "--output")
