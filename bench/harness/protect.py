"""`bench protect`: protected copies of a person's own photos.

The photos (a folder, with CelebA-style labels or without: the attribute classifier then
infers them) make every split of a run of one defense against no bypass on the chosen
generators. The defense fits on them where it learns and protects each photo once (its
`per_image_settings`: one copy for every edit); the run scores what that does to each
generator's edits (`report/`: report.md, cells.jsonl, run.json, the grids). The copies
are written as 8-bit PNGs at the generators' resolution (centre-cropped squares), each
pixel kept within the defense's budget after rounding, and scored again as written.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch

from bench.contract.errors import BenchError
from bench.contract.io import atomic_write, atomic_write_json, atomic_write_text, writable_folder
from bench.contract.results import NONE, STANDARD
from bench.harness.cache import Cache
from bench.harness.inputs import load_data, load_generator, load_split, make_plugin
from bench.harness.profiles import check_settings
from bench.harness.reporting.report import write_report
from bench.harness.runner import cache_root, plan_run, run
from bench.toolkit.budget import measure
from bench.toolkit.data import load_faceset, to_tensor
from bench.toolkit.demo_faces import to_uint8
from bench.toolkit.device import resolve_device
from bench.toolkit.generation import batched_generate
from bench.toolkit.metrics import DSR, L2

REPORT = "report"


def protect_config(config: dict, photos: Path, defense: str, count: int) -> dict:
    """`config` for protecting every photo of the folder with `defense`, one copy each."""
    config = copy.deepcopy(config)
    everything = [0, count]
    config.update(data={"path": str(photos.resolve()), "dataset": "folder"},
                  splits={"finetune": everything, "defense": everything, "eval": everything},
                  limit=None, finetune_limit=None, defense_fit_limit=None, scenarios=[STANDARD],
                  metrics=["l2", "ssim", "dsr"], cache=True)  # the copies are read back from the cache
    per_image = type(make_plugin("defenses", defense, config)).per_image_settings or {}
    config["defenses"][defense] = {**per_image, **config["defenses"].get(defense, {})}  # a set value wins
    return check_settings(config)


def eight_bit(protected: torch.Tensor, clean: torch.Tensor, eps: float) -> torch.Tensor:
    """uint8 (N, H, W, 3) copies of protected images (N, 3, H, W): rounded, and kept
    within eps (on [-1, 1]) of the clean photo's own 8-bit values."""
    levels = math.floor(eps * 127.5 + 1e-9)
    clean8, protected8 = to_uint8(clean).int(), to_uint8(protected).int()
    return torch.max(torch.min(protected8, clean8 + levels), clean8 - levels).clamp(0, 255).to(torch.uint8)


def one_per_photo(protected: torch.Tensor, defense: str) -> torch.Tensor:
    """The protection (T, N, 3, H, W) as one image per photo, the same for every target."""
    if not torch.equal(protected, protected[:1].expand_as(protected)):
        raise BenchError(f"defense {defense!r} made a different protected image for each edit target; bench protect "
                         "needs one per photo (the defense's per_image_settings)")
    return protected[0]


def copy_names(files: list[Path]) -> list[str]:
    """Each photo's copy: its name with .png (its full name first where two share a stem)."""
    stems = [f.stem for f in files]
    return [f"{f.stem if stems.count(f.stem) == 1 else f.name}.png" for f in files]


def protect_photos(config: dict, defense: str, generators: str, photos: str, out: str, command: str) -> str:
    """Protect every photo of `photos` with `defense` against `generators`, write the copies
    and the report into `out`, and return the report's text."""
    photos, out = Path(photos).expanduser(), Path(out).expanduser()
    if out.resolve() == photos.resolve():
        raise BenchError(f"OUT_FOLDER {out} is the photos' folder: give the copies a folder of their own")
    writable_folder(out, "OUT_FOLDER")
    faces = load_faceset(photos, "folder", config["resolution"])
    config = protect_config(config, photos, defense, len(faces))
    plan, skipped = plan_run(config, defense, NONE, generators)
    run(config, out / REPORT, plan, skipped, command)
    write_report(out / REPORT)
    cache, split = Cache(cache_root(config)[0]), load_split(config, load_data(config), "eval")
    copies = {}
    for unit in plan.units:
        if unit.budget and unit.cell.scenario == STANDARD:
            step = plan.steps[unit.step]
            copies[unit.cell.generator] = one_per_photo(cache.load(step.kind, step.key)[0]["value"], defense)
    eps = getattr(make_plugin("defenses", defense, config).params, "eps", config["protocol"]["eps"])
    written = {g: eight_bit(protected, split.images, eps) for g, protected in copies.items()}
    folders = write_copies(written, split.faces.files, out)
    return write_protect_report(score_copies(config, written, split), folders, defense, eps, config, split, out)


def write_copies(written: dict[str, torch.Tensor], files: list[Path], out: Path) -> dict[str, Path]:
    """PNG copies: into `out` where every generator's copies are the same (a universal
    defense, or one generator), else into `out/<generator>/`."""
    from PIL import Image

    first = next(iter(written.values()))
    shared = all(torch.equal(first, w) for w in written.values())
    folders = {g: out if shared else out / g for g in written}
    for folder, images in {folders[g]: images for g, images in written.items()}.items():
        folder.mkdir(parents=True, exist_ok=True)
        for name, image in zip(copy_names(files), images.numpy()):
            atomic_write(folder / name, lambda tmp, image=image: Image.fromarray(image).save(tmp, format="PNG"))
    return folders


def score_copies(config: dict, written: dict[str, torch.Tensor], split) -> list[dict]:
    """What the copies as written do: their distance to the photos, and each generator's
    edits of them against its edits of the photos."""
    device = resolve_device(config["device"])
    rows = []
    for g, images in written.items():
        generator = load_generator(config, g, device)
        copies = to_tensor(images.numpy())
        conditions = generator.targets(split.faces.labels(generator.attribute_names))
        clean = batched_generate(generator, split.images, conditions, config["batch_size"]).flatten(0, 1)
        edited = batched_generate(generator, copies, conditions, config["batch_size"]).flatten(0, 1)
        budget = measure(copies.unsqueeze(0), split.images)
        rows.append({"generator": g, "photos": len(images), "linf": budget["linf"][0], "psnr": budget["psnr"][0],
                     "ssim": budget["ssim"][0], "edit_l2": float(L2.per_pair(edited, clean).mean()),
                     "dsr": float(DSR.per_pair(edited, clean).mean()), "edits": len(clean)})
    return rows


def write_protect_report(rows: list[dict], folders: dict[str, Path], defense: str, eps: float, config: dict, split,
                 out: Path) -> str:
    """protect.md and protect.json in `out/report/`: one line per generator."""
    import pandas as pd

    faces = split.faces
    labels = (f"inferred by the attribute classifier ({faces.labels_inferred_by['file']}, probability > 0.5)"
              if faces.labels_inferred_by else "from the folder's label file")
    table = pd.DataFrame([{"generator": r["generator"], "copies in": str(folders[r["generator"]]),
                           "L-inf": r["linf"], "PSNR dB": r["psnr"], "SSIM": r["ssim"], "edit L2": r["edit_l2"],
                           "DSR": r["dsr"], "edits": r["edits"]} for r in rows])
    text = (f"# {defense}: protected copies of {len(faces)} photos from {faces.root}\n\n"
            f"8-bit PNG copies at {config['resolution']} px (centre-cropped squares), each pixel within eps = {eps} "
            f"of the photo's. Attribute labels {labels}. Measured on the copies as written: L-inf, PSNR and SSIM "
            "against the photos; each generator's edits of the copies against its edits of the photos (edit "
            f"L2, and DSR: the share of edits with L2 > {DSR.spec.threshold}, i.e. disrupted). The run behind "
            f"them: {out / REPORT}/report.md.\n\n" + table.to_markdown(index=False, floatfmt=".4f") + "\n")
    atomic_write_text(out / REPORT / "protect.md", text)
    atomic_write_json(out / REPORT / "protect.json", {"defense": defense, "eps": eps, "photos": len(faces),
                                                       "labels": labels,
                                                       "labels_inferred_by": faces.labels_inferred_by,
                                                       "folders": {g: str(f) for g, f in folders.items()},
                                                       "generators": rows})
    return text
