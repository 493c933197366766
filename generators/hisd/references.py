"""`python -m generators.hisd.references`: pick HiSD's reference faces (black, blond,
brown hair) from a face set, the ones the attribute classifier is surest about, and
write them side by side as the strip the model reads (by default its shipped one,
`weights/hisd_references.png`). A bad input ends with exit code 2 and one error line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.contract.commands import at_least, one_error_line
from bench.toolkit.classifier import SHIPPED as SHIPPED_CLASSIFIER
from bench.toolkit.classifier import AttributeClassifier
from bench.toolkit.data import LOADERS, load_faceset

from .model import SHIPPED_REFERENCES, pick_references, save_reference_strip

PROG = "python -m generators.hisd.references"
MIN_RESOLUTION = 16  # the faces' smallest size


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="pick HiSD's reference faces (black, blond, brown hair)")
    parser.add_argument("--data", help="faces to pick from (default: the demo faces)")
    parser.add_argument("--dataset", choices=list(LOADERS), default="demo")
    parser.add_argument("--resolution", type=at_least(MIN_RESOLUTION), default=64)
    parser.add_argument("--classifier", default=str(SHIPPED_CLASSIFIER),
                        help="attribute classifier weights (default: the shipped ones)")
    parser.add_argument("--out", default=str(SHIPPED_REFERENCES),
                        help="the strip to write (default: the one HiSD's 'shipped' references read)")
    return parser


def write_references(args: argparse.Namespace) -> int:
    faces = load_faceset(args.data, args.dataset, args.resolution)
    references = pick_references(faces.load(), AttributeClassifier.load(Path(args.classifier)))
    save_reference_strip(references, Path(args.out))
    print(f"wrote {args.out} (black, blond, brown) from {len(faces)} faces of {faces.root}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return one_error_line(PROG, lambda: write_references(args))


if __name__ == "__main__":
    sys.exit(main())
