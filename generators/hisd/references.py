"""`python -m generators.hisd.references`: pick HiSD's reference faces (black, blond,
brown hair) from a face set, the ones the attribute classifier is surest about, and
write them side by side as the strip the model reads (by default its shipped one,
`weights/hisd_references.png`). A bad input ends with exit code 2 and one error line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.contract.errors import BenchError
from bench.toolkit.classifier import SHIPPED as SHIPPED_CLASSIFIER
from bench.toolkit.classifier import AttributeClassifier
from bench.toolkit.data import LOADERS, load_faceset

from .model import SHIPPED_REFERENCES, pick_references, save_reference_strip

PROG = "python -m generators.hisd.references"
MIN_RESOLUTION = 16


def resolution(text: str) -> int:
    """An argparse type: an image size of at least MIN_RESOLUTION pixels."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < MIN_RESOLUTION:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_RESOLUTION}, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="pick HiSD's reference faces (black, blond, brown hair)")
    parser.add_argument("--data", help="faces to pick from (default: the demo faces)")
    parser.add_argument("--dataset", choices=list(LOADERS), default="demo")
    parser.add_argument("--resolution", type=resolution, default=64)
    parser.add_argument("--classifier", default=str(SHIPPED_CLASSIFIER),
                        help="attribute classifier weights (default: the shipped ones)")
    parser.add_argument("--out", default=str(SHIPPED_REFERENCES),
                        help="the strip to write (default: the one HiSD's 'shipped' references read)")
    return parser


def write_references(args: argparse.Namespace) -> None:
    faces = load_faceset(args.data, args.dataset, args.resolution)
    references = pick_references(faces.load(), AttributeClassifier.load(Path(args.classifier)))
    save_reference_strip(references, Path(args.out))
    print(f"wrote {args.out} (black, blond, brown) from {len(faces)} faces of {faces.root}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        write_references(args)
    except BenchError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the environment: a full disk, a folder that cannot be written
        print(f"{PROG}: error: {err.strerror or err}" + (f": {err.filename}" if err.filename else ""),
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
