"""The `bench` command line."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from bench.errors import BenchError

DATASET_KINDS = ("celeba", "celebahq", "folder")


def cmd_ls(args) -> int:
    from bench.registry import GROUPS, Registry

    kinds = [args.kind] if args.kind else list(GROUPS)
    for kind in kinds:
        registry = Registry(kind)
        print(f"{kind}:")
        if args.verbose:
            for row in registry.describe():
                extra = f"v{row['version']}  {row['paper']}" if row["status"] == "ok" else row["status"]
                print(f"  {row['name']:<14} {extra}")
        else:
            for name in registry.names():
                print(f"  {name}")
    return 0


def cmd_train_generator(args) -> int:
    import dataclasses

    from bench.config import parse_overrides
    from bench.data import load_faceset
    from bench.device import resolve_device
    from bench.plugins import build_params
    from bench.registry import Registry

    cls = Registry("generators").get(args.name)
    if not hasattr(cls, "train_recipe"):
        raise BenchError(f"generator {args.name!r} has no training recipe")
    params = build_params(cls.TrainParams, parse_overrides(args.set), f"{args.name} training")
    faceset = load_faceset(args.data, args.dataset, params.resolution)
    out_dir = Path(args.out or f"runs/train-{args.name}-{params.resolution}")
    command = "bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"training {args.name} on {len(faceset)} images from {faceset.root} -> {out_dir}")
    print("settings: " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(params).items()))
    cls.train_recipe(params, faceset, out_dir, resolve_device(args.device),
              export=Path(args.export) if args.export else None, command=command)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ls", help="list installed defenses, bypasses, generators and metrics")
    p.add_argument("kind", nargs="?", choices=["defenses", "bypasses", "generators", "metrics"])
    p.add_argument("-v", "--verbose", action="store_true", help="import each plugin to show its version")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("train-generator", help="train a generator with its own recipe (resumable)")
    p.add_argument("name")
    p.add_argument("--data", required=True, help="data folder")
    p.add_argument("--dataset", choices=DATASET_KINDS, default="celebahq")
    p.add_argument("--out", help="folder for checkpoints, loss log and samples (resumes if present)")
    p.add_argument("--export", help="write the final generator weights here (.safetensors)")
    p.add_argument("--device", default="auto")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a training setting")
    p.set_defaults(func=cmd_train_generator)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BenchError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; finished steps are cached, run again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
