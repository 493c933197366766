"""The `bench` command line."""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path

from bench.contract.commands import at_least, one_error_line
from bench.contract.errors import BenchError, ConfigError

DATASET_KINDS = ("demo", "celeba", "celebahq", "folder")  # the keys of bench.toolkit.data.LOADERS (not imported: --help stays fast)


def cmd_ls(args) -> int:
    from bench.contract.registry import GROUPS, registry

    kinds = [args.kind] if args.kind else list(GROUPS)
    for kind in kinds:
        plugins = registry(kind)
        print(f"{kind}:")
        if args.verbose:
            for row in plugins.describe():
                extra = f"v{row['version']}  {row['paper']}" if row["status"] == "ok" else row["status"]
                print(f"  {row['name']:<14} {extra}")
        else:
            for name in plugins.names():
                print(f"  {name}")
    return 0


def cmd_train_generator(args) -> int:
    import dataclasses

    from bench.contract.io import writable_folder
    from bench.contract.params import build_params
    from bench.contract.registry import registry
    from bench.harness.config import parse_overrides
    from bench.toolkit.data import load_faceset
    from bench.toolkit.device import resolve_device

    cls = registry("generators").get(args.name)
    if not hasattr(cls, "TrainParams"):
        raise BenchError(f"generator {args.name!r} has no training recipe")
    params = build_params(cls.TrainParams, parse_overrides(args.set), f"{args.name} training")
    faceset = load_faceset(args.data, args.dataset, params.resolution)
    out_dir = writable_folder(args.out or f"runs/train-{args.name}-{params.resolution}", "--out")
    command = "bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"training {args.name} on {len(faceset)} images from {faceset.root} -> {out_dir}")
    print("settings: " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(params).items()))
    cls.train_recipe(params, faceset, out_dir, resolve_device(args.device),
                     export=Path(args.export) if args.export else None, command=command)
    return 0


def cmd_train_classifier(args) -> int:
    import dataclasses

    from bench.contract.io import writable_folder
    from bench.contract.params import build_params
    from bench.harness.config import parse_overrides
    from bench.toolkit import classifier
    from bench.toolkit.data import load_faceset
    from bench.toolkit.device import resolve_device

    params = build_params(classifier.TrainParams, parse_overrides(args.set), "classifier training")
    faceset = load_faceset(args.data, args.dataset, params.resolution)
    out_dir = writable_folder(args.out or f"runs/train-classifier-{params.resolution}", "--out")
    print("settings: " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(params).items()))
    classifier.train(params, faceset, out_dir, resolve_device(args.device),
                     export=Path(args.export) if args.export else None,
                     command="bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    return 0


def cmd_train_demo_faces(args) -> int:
    import dataclasses

    from bench.contract.params import build_params
    from bench.harness.config import parse_overrides
    from bench.toolkit import demo_faces
    from bench.toolkit.data import load_faceset
    from bench.toolkit.device import resolve_device

    params = build_params(demo_faces.TrainParams, parse_overrides(args.set), "demo face training")
    faceset = load_faceset(args.data, args.dataset, params.resolution)
    print("settings: " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(params).items()))
    demo_faces.train(params, faceset, Path(args.out or f"runs/train-demo-faces-{params.resolution}"),
                     resolve_device(args.device), export=Path(args.export) if args.export else None,
                     command="bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    return 0


def cmd_make_demo_faces(args) -> int:
    from bench.toolkit import demo_faces
    from bench.toolkit.classifier import AttributeClassifier

    labeller = None if args.no_labels else AttributeClassifier.load(Path(args.classifier))
    demo_faces.make_demo_set(Path(args.generator), Path(args.out), args.count, args.seed, labeller,
                             args.candidates_factor,
                             command="bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    print(f"wrote {args.count} faces to {args.out}")
    return 0


def cmd_edit_success(args) -> int:
    from bench.contract.io import atomic_write_text, writable_folder
    from bench.contract.registry import registry
    from bench.harness.inputs import load_data, load_generator, load_split
    from bench.toolkit.device import resolve_device
    from bench.toolkit.edit_check import edit_success_rows, edit_success_table

    config = resolved_config(args)
    device = resolve_device(config["device"])
    faces = load_split(config, load_data(config, announce=True), "eval", config["limit"])
    rows = []
    for name in registry("generators").resolve(args.generators):
        generator = load_generator(config, name, device)
        rows += edit_success_rows(generator, faces.images, faces.faces.labels(generator.attribute_names),
                                  config["batch_size"])
    table = edit_success_table(rows)
    text = (f"Edit success on {len(faces.images)} evaluation faces ({faces.identity['name']}, "
            f"first id {faces.faces.ids[0]}); gain = success - control\n\n"
            + table.to_markdown(index=False, floatfmt=".3f") + "\n")
    print(text)
    if args.output:
        out = writable_folder(args.output, "--output")
        atomic_write_text(out / "edit_success.md", text)
        atomic_write_text(out / "edit_success.csv", table.to_csv(index=False, float_format="%.4f"))
        print(f"wrote {out}/edit_success.md and .csv")
    return 0


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one `bench: error:` line (no usage block)."""

    def error(self, message):
        self.exit(2, f"bench: error: {message} (see `{self.prog} --help`)\n")


def positive(text: str) -> float:
    """An argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


SEED_LIMIT = 2**31  # bench.contract.params.Seed (not imported: --help stays fast)
RESULTS = Path("bench-results")
CROP_JITTER_DEFAULT = 0.0  # bench.harness.protect.CROP_JITTER (not imported: --help stays fast)


def default_output_dir() -> Path:
    from datetime import datetime

    return RESULTS / datetime.now().strftime("%Y%m%d-%H%M%S")


def latest_run_dir() -> Path:
    runs = sorted(p for p in RESULTS.glob("*") if (p / "cells.jsonl").exists())
    if not runs:
        raise BenchError("no runs under ./bench-results; pass a run folder or run `bench run` first")
    return runs[-1]


def resolved_config(args) -> dict:
    from bench.harness.config import merge, parse_overrides
    from bench.harness.profiles import check_settings, default_splits, get_profile
    from bench.toolkit.data import load_faceset

    config = get_profile(args.profile)
    flags = {"seed": args.seed, "device": args.device, "limit": getattr(args, "limit", None)}
    config.update({k: v for k, v in flags.items() if v is not None})
    if getattr(args, "data", None):
        dataset = args.dataset or "celebahq"
        config["data"] = {"path": str(Path(args.data).expanduser().resolve()), "dataset": dataset}
        size = len(load_faceset(args.data, "folder", 16)) if dataset == "folder" else None
        config["splits"] = default_splits(config["profile"], dataset, size)
    elif getattr(args, "dataset", None):
        raise ConfigError(f"--dataset {args.dataset} describes the layout of --data, which is missing")
    if getattr(args, "no_cache", False):
        config["cache"] = False
    if getattr(args, "refit", False) or getattr(args, "no_cache", False):
        config["released_fits"] = False
    return check_settings(merge(config, parse_overrides(args.set)))


def cmd_run(args) -> int:
    from bench.harness.executors import make_executor
    from bench.harness.reporting.report import write_report
    from bench.harness.runner import (
        check_output,
        describe_plan,
        find_unfinished,
        plan_run,
        run,
    )

    executor = make_executor(args.executor, args.scheduler, args.workers)
    config = executor.configure(resolved_config(args))
    plan, skipped = plan_run(config, args.defenses, args.bypass, args.generators)
    output = Path(args.output) if args.output else find_unfinished(RESULTS, plan)
    if args.dry_run:
        print(describe_plan(config, plan, skipped, output))
        return 0
    output = output or default_output_dir()
    check_output(output)
    command = "bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    run(config, output, plan, skipped, command, executor, fresh=args.fresh)
    print(write_report(output))
    print(f"results in {output}/ (cells.jsonl, costs.jsonl, run.json, table1.csv, report.md)")
    return 0


def cmd_protect(args) -> int:
    from bench.harness.protect import protect_photos

    command = "bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(protect_photos(resolved_config(args), args.defense, args.generators, args.photos, args.out, command,
                         args.crop_jitter))
    print(f"protected copies in {args.out}/, what they do in {args.out}/report/ (protect.md, photos.csv)")
    return 0


def cmd_report(args) -> int:
    from bench.contract.io import writable_folder
    from bench.harness.reporting.report import write_report

    runs = [Path(r) for r in args.runs] or [latest_run_dir()]
    board = not args.no_leaderboard
    if args.output:  # several runs: one report of them all
        print(write_report(runs, writable_folder(args.output, "--output"), leaderboard=board))
        return 0
    for run_dir in runs:
        print(write_report(run_dir, leaderboard=board))
    return 0


def cmd_leaderboard(args) -> int:
    from bench.contract.io import writable_folder
    from bench.harness.reporting.board_html import screenshot
    from bench.harness.reporting.leaderboard import summary_line, write_leaderboards
    from bench.harness.reporting.runs import read_run

    runs = [Path(r) for r in args.runs] or [latest_run_dir()]
    output = writable_folder(args.output or runs[0] / "leaderboard", "--output")
    for where, board in write_leaderboards([read_run(r) for r in runs], output):
        print(summary_line(where, board))
        if args.screenshot:  # the whole board at a glance: no entry expanded
            png = screenshot(where / "leaderboard.html", where / "leaderboard.png")
            print(f"wrote {png}")
    return 0


def cmd_perf(args) -> int:
    from bench.contract.io import writable_folder
    from bench.harness.perf import measure, tables, write
    from bench.toolkit.device import resolve_device

    config = resolved_config(args)
    output = writable_folder(args.output, "--output")
    matrix = None if args.no_matrix else {"defenses": args.defenses, "bypasses": args.bypass,
                                          "generators": args.generators}
    device = resolve_device(config["device"])
    matmul_size = args.matmul_size or (8192 if device.type == "cuda" else 2048)
    result = measure(config, args.generators, device, args.batch, args.repeats, matmul_size, matrix, args.scale)
    print(tables(result))
    print(f"wrote {write(result, output)}")
    return 0


def cmd_grid(args) -> int:
    from bench.contract.io import writable_folder
    from bench.contract.registry import registry
    from bench.harness.inputs import load_data, load_generator, load_split
    from bench.toolkit.device import resolve_device
    from bench.toolkit.figures import save_titled_grid
    from bench.toolkit.generation import batched_generate

    config = resolved_config(args)
    out = writable_folder(args.output, "--output")
    device = resolve_device(config["device"])
    faces = load_split(config, load_data(config, announce=True), "eval", args.faces)
    for name in registry("generators").resolve(args.generators):
        generator = load_generator(config, name, device)
        conditions = generator.targets(faces.faces.labels(generator.attribute_names))
        outputs = batched_generate(generator, faces.images, conditions, config["batch_size"])
        columns = [("input", faces.images)] + list(zip(generator.target_names(), outputs))
        path = out / f"{name}_edits.png"
        save_titled_grid(columns, path, f"{name}: edits of {len(faces.images)} evaluation faces "
                                        f"({faces.identity['name']}, first id {faces.faces.ids[0]})")
        print(f"wrote {path}")
    return 0


def cmd_validate(args) -> int:
    from bench.contract.registry import SINGULAR
    from bench.harness.validate import validate

    failed = 0
    for name in args.names:
        kind, checks = validate(name, args.kind)
        print(f"{SINGULAR[kind]} {name}:")
        for what, ok, detail in checks:
            failed += not ok
            print(f"  {'ok  ' if ok else 'FAIL'} {what}" + (f"  ({detail})" if detail else ""))
    return 1 if failed else 0


def cmd_download(args) -> int:
    """Each file the paper profile reads: where it goes, where to get it, and whether the
    file there is the released one (`bench.harness.downloads`); 1 where one is different."""
    from bench.contract.registry import registry
    from bench.harness.downloads import DIFFERENT, check, generator_checkpoint, other_files

    expected = [generator_checkpoint(name) for name in args.names or registry("generators").names()]
    if not args.names:
        expected += other_files()
    states = []
    for item in expected:
        finding = check(item)
        states.append(finding.state)
        print(f"{item.name}: {finding.state}: {finding.detail}\n    source: {item.source}")
    print("bench does not download weights itself: fetch the files from their sources and place them at the paths above "
          "(or set BENCH_WEIGHTS to the folder holding <generator>/<file>).")
    return 1 if DIFFERENT in states else 0


def add_data_options(p: argparse.ArgumentParser, data: bool = True) -> None:
    p.add_argument("--profile", default="quick", help="quick (default), ci or paper")
    if data:
        p.add_argument("--data", help="data folder (default: the profile's)")
        p.add_argument("--dataset", choices=DATASET_KINDS, help="layout of --data (default celebahq)")
    p.add_argument("--seed", type=at_least(0, below=SEED_LIMIT))
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a setting, e.g. bypasses.lora.rank=16 or splits.eval=[0,100]")


def add_training_parser(sub, name: str, help_text: str, export_help: str, func,
                        out_help: str = "folder for checkpoints, loss log and samples (resumes if present)"):
    """A sub-command that trains one network on a data folder (resumable from --out)."""
    p = sub.add_parser(name, help=help_text)
    p.add_argument("--data", required=True, help="data folder")
    p.add_argument("--dataset", choices=DATASET_KINDS, default="celebahq")
    p.add_argument("--out", help=out_help)
    p.add_argument("--export", help=export_help)
    p.add_argument("--device", default="auto")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a training setting")
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ls", help="list installed defenses, bypasses, generators and metrics")
    p.add_argument("kind", nargs="?", choices=["defenses", "bypasses", "generators", "metrics"])
    p.add_argument("-v", "--verbose", action="store_true", help="import each plugin to show its version")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("run", help="run defenses x bypasses x generators and score every cell")
    p.add_argument("--defenses", default="all", help="comma list or 'all' (default: all)")
    p.add_argument("--bypass", default="all", help="comma list, 'all' (default) or a named set: transforms, "
                                                    "finetune_faces, ladder (the attacker's cost ladder)")
    p.add_argument("--generators", default="all", help="comma list or 'all' (default: all)")
    p.add_argument("--limit", type=at_least(1), help="number of evaluation images")
    p.add_argument("--output", help="results folder; an unfinished run of the same plan there resumes "
                                    "(default: the newest unfinished run of this plan under bench-results/, "
                                    "else bench-results/<time>)")
    p.add_argument("--no-cache", action="store_true", help="recompute everything (released fits too), store nothing")
    p.add_argument("--refit", action="store_true",
                   help="fit anew what comes released with bench (the quick profile's fits on the demo faces); "
                        "the same as --set released_fits=false")
    p.add_argument("--fresh", action="store_true",
                   help="replace the rows the --output folder holds (of this plan or another) instead of resuming")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan: steps of each kind, how many are cached, the time left; run nothing")
    p.add_argument("--executor", default="local", choices=["local", "dask"],
                   help="local (default: steps one after another here) or dask (dask.distributed)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="with --executor dask: a running scheduler, "
                                                         "e.g. tcp://10.0.0.5:8786 (workers share the cache folder)")
    p.add_argument("--workers", type=at_least(1), help="with --executor dask and no --scheduler: start a local cluster "
                                               "of N worker processes (default 2)")
    add_data_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("protect", help="write protected copies (PNG, each photo's own size) of your own photos, "
                                       "with what they do to each generator's edits as an attacker loads them")
    p.add_argument("photos", help="a photo or a folder of photos (JPEG, PNG, TIFF, WebP, BMP; HEIC with "
                                  "pillow-heif): faces are found in them, any size and framing")
    p.add_argument("out", help="folder for the protected copies and report/")
    p.add_argument("--defense", required=True, help="the defense to protect with (`bench ls defenses`)")
    p.add_argument("--generators", default="all", help="comma list or 'all' (default: all); with several, "
                                                       "one copy per generator in OUT/<generator>/")
    p.add_argument("--crop-jitter", type=float, default=CROP_JITTER_DEFAULT,
                   help="also optimise through four crops this share of the face's side away from the "
                        f"detector's (default {CROP_JITTER_DEFAULT}: the detector's crop alone)")
    add_data_options(p, data=False)
    p.set_defaults(func=cmd_protect)

    p = sub.add_parser("report", help="tables (CSV, Markdown) from one or more run folders")
    p.add_argument("runs", nargs="*", help="run folders (default: the newest under ./bench-results)")
    p.add_argument("--output", help="write one report of all the given runs here (default: each into its folder)")
    p.add_argument("--no-leaderboard", action="store_true",
                   help="leave out the runs' leaderboard (written by default to <output>/leaderboard)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("leaderboard", help="rank defenses by their worst case over every bypass of the runs")
    p.add_argument("runs", nargs="*", help="run folders (default: the newest under ./bench-results)")
    p.add_argument("--output", help="folder for leaderboard.md/.html, board.json and entries/ "
                                    "(default: <first run>/leaderboard)")
    p.add_argument("--screenshot", action="store_true",
                   help="also save leaderboard.png, drawn by headless Chromium (the first entry expanded)")
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("perf", help="benchmark: the PGD step against the device's peak, and a small run cold "
                                    "and warm (every step's speed)")
    p.add_argument("--generators", default="all")
    p.add_argument("--defenses", default="all", help="defenses of the small run (default all)")
    p.add_argument("--bypass", default="lora", help="bypasses of the small run (default lora: the main job)")
    p.add_argument("--scale", type=positive, default=8,
                   help="the small run's data, fine-tuning and defense fits are the profile's divided by this "
                        "(default 8)")
    p.add_argument("--no-matrix", action="store_true", help="skip the small run (the PGD step only)")
    p.add_argument("--batch", type=at_least(1), default=32, help="images per PGD step (default 32)")
    p.add_argument("--repeats", type=at_least(1), default=5, help="timed repeats, the median is kept (default 5)")
    p.add_argument("--matmul-size", type=at_least(1),
                   help="side of the square matmul behind the peak (default 2048 on a CPU, 8192 on CUDA)")
    p.add_argument("--output", default="benchmarks/perf", help="folder for perf.json (default benchmarks/perf)")
    add_data_options(p)
    p.set_defaults(func=cmd_perf)

    p = sub.add_parser("grid", help="image grid of each generator's edits on evaluation faces")
    p.add_argument("--generators", default="all")
    p.add_argument("--faces", type=at_least(1), default=8, help="number of evaluation faces (rows)")
    p.add_argument("--output", default="results", help="folder for <generator>_edits.png")
    add_data_options(p)
    p.set_defaults(func=cmd_grid)

    p = sub.add_parser("validate", help="check that plugins keep their contract (seconds, no data)")
    p.add_argument("names", nargs="+")
    p.add_argument("--kind", choices=["defenses", "bypasses", "generators", "metrics"])
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("download", help="where the official checkpoints and the metrics' weights go")
    p.add_argument("names", nargs="*", help="generators (default: all)")
    p.set_defaults(func=cmd_download)

    p = add_training_parser(sub, "train-generator", "train a generator with its own recipe (resumable)",
                            "write the final generator weights here (.safetensors)", cmd_train_generator)
    p.add_argument("name")

    add_training_parser(sub, "train-classifier", "train the attribute classifier behind edit_success (resumable)",
                        "write the final weights here (.safetensors)", cmd_train_classifier,
                        out_help="folder for checkpoints and the loss log (resumes if present)")

    add_training_parser(sub, "train-demo-faces", "train the small face generator behind the demo face set",
                        "write the final generator here (.safetensors)", cmd_train_demo_faces)

    p = sub.add_parser("make-demo-faces", help="sample and label the demo face set (deterministic)")
    p.add_argument("--generator", default="bench/weights/demo_face_generator_64.safetensors")
    p.add_argument("--classifier", default="bench/weights/attribute_classifier_64.safetensors")
    p.add_argument("--no-labels", action="store_true", help="write the faces without attribute labels")
    p.add_argument("--out", default="bench/demo")
    p.add_argument("--count", type=at_least(1), default=320)
    p.add_argument("--seed", type=at_least(0, below=SEED_LIMIT), default=0)
    p.add_argument("--candidates-factor", type=at_least(1), default=2,
                   help="sample this many times --count and keep the most confidently labelled")
    p.set_defaults(func=cmd_make_demo_faces)

    p = sub.add_parser("edit-success", help="how often each generator's edits show the asked attribute, "
                                            "against a no-edit control, per target")
    p.add_argument("--generators", default="all")
    p.add_argument("--limit", type=at_least(1), help="number of evaluation images")
    p.add_argument("--output", help="also write edit_success.md/.csv here")
    add_data_options(p)
    p.set_defaults(func=cmd_edit_success)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return one_error_line("bench", lambda: args.func(args))
    except KeyboardInterrupt as err:
        kept = str(err) or "every finished step is in the cache; run the same command to resume"
        print(f"bench: interrupted: {kept}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
