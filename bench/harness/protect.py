"""`bench protect`: protected copies of a person's own photos, at their own size.

Each photo (a file, or every photo of a folder) is read as its owner sees it (EXIF
orientation applied), its faces found by MTCNN and cut out along CelebA-HQ's quad, the
crop the generators learned from. The defense protects every face through that cut,
on the photo's own pixels (bench.harness.photo_path), against each generator, for the
edits the attribute classifier's reading of the face suggests. The copy is a PNG of the
photo's size and mode in which only the pixels the cuts read differ, each within eps
as written. A photo with no face is reported and not written.

The report measures each copy as an attacker would use it (bench.harness.attacker_view):
edit L2 and DSR on the detector's path, on a plain centre crop and after JPEG 90, and
the copy's L-inf (whole photo, as written) with PSNR and SSIM over the faces' boxes.
Photos are done one at a time (memory bounded by one photo); each photo's result is kept
in report/photos/, so an interrupted folder resumes where it stopped.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import bench
from bench.contract.errors import BenchError, DataError
from bench.contract.io import atomic_write, atomic_write_json, atomic_write_text, writable_folder
from bench.contract.results import NONE
from bench.harness.attacker_view import (
    CENTRE_CROP,
    DETECTOR_PATH,
    JPEG90,
    PATHS,
    Original,
    attacker_scores,
    centre_crop,
    cut,
)
from bench.harness.inputs import load_generator, make_plugin
from bench.harness.photo_path import protect_face
from bench.harness.profiles import check_settings
from bench.harness.provenance import environment, git_state
from bench.toolkit.budget import measure
from bench.toolkit.data import image_files
from bench.toolkit.device import resolve_device
from bench.toolkit.face_align import Quad, bounds
from bench.toolkit.face_detection import DETECTOR, detect_faces
from bench.toolkit.metrics import DSR
from bench.toolkit.photos import PHOTO_SUFFIXES, Photo, read_photo

REPORT = "report"
# how far (a share of the face's side) four more crops the protection is optimised through
# lie from the detector's (Quad.jittered). 0: the detector's crop alone. Measured on 8 composed
# photos with Disrupting's 10 steps against StarGAN, DSR as the attacker re-detects the face:
# 0.875 at 0, 0.875 at 0.005, 0.53 at 0.01, 0.60 at 0.02 (the steps are spread over five crops)
CROP_JITTER = 0.0
CLASSIFIER_RESOLUTION = 64


def protect_config(config: dict, defense: str) -> dict:
    """`config` with the defense's settings for one protected image per photo."""
    config = copy.deepcopy(config)
    per_image = type(make_plugin("defenses", defense, config)).per_image_settings
    if per_image is None:
        raise BenchError(f"defense {defense!r} does not declare per_image_settings (the settings under which it "
                         "makes one protected image per photo), so bench protect cannot use it")
    configured = config["defenses"].get(defense, {})
    clashes = {k: v for k, v in per_image.items() if k in configured and configured[k] != v}
    if clashes:
        raise BenchError(f"bench protect writes one copy per photo, which defense {defense!r} makes under "
                         f"{per_image} (its per_image_settings); the settings ask for "
                         f"{ {k: configured[k] for k in clashes} }")
    config["defenses"][defense] = {**configured, **per_image}
    return check_settings(config)


def fitted_defense(config: dict, defense: str, generator: str):
    """The defense, fitted where it learns: the fit `bench run` makes against `generator`
    on the profile's defender faces (computed once, then read from the cache)."""
    plugin = make_plugin("defenses", defense, config)
    if plugin.fit_scope() is None:
        return plugin
    from bench.harness.plan import attack_precision_of, device_kind
    from bench.harness.released import released_root
    from bench.harness.runner import cache_root, plan_run
    from bench.harness.steps import Workspace, execute

    plan, _ = plan_run(config, defense, NONE, generator)
    released = released_root(config)
    ws = Workspace(config, str(cache_root(config)[0]), device_kind(config), attack_precision_of(config),
                   attack_precision_of(config, fit=True), str(released) if released else None)
    fit = next(s.task["defense_fit"] for s in plan.steps.values()
               if s.kind == "protect" and s.task["generator"] == generator and s.task["pipeline"] is None)
    execute(plan.steps[fit], ws)
    plugin.load_state(*ws.value(fit))
    return plugin


def photo_files(photos: Path) -> list[Path]:
    if photos.is_file():
        return [photos]
    if not photos.is_dir():
        raise BenchError(f"PHOTOS {photos} is neither a photo nor a folder")
    files = image_files(photos, PHOTO_SUFFIXES)
    if not files:
        raise BenchError(f"no photos ({', '.join(sorted(PHOTO_SUFFIXES))}) in {photos}")
    return files


def copy_names(files: list[Path]) -> list[str]:
    """Each photo's copy: its name with .png (its full name first where two share a stem)."""
    stems = [f.stem for f in files]
    return [f"{f.stem if stems.count(f.stem) == 1 else f.name}.png" for f in files]


class Labeller:
    """The edits a face is given: the attribute classifier's reading of its aligned crop."""

    def __init__(self):
        from bench.toolkit.classifier import AttributeClassifier

        self.classifier = AttributeClassifier.load()

    def labels(self, crop: torch.Tensor, generator) -> torch.Tensor:
        small = F.interpolate(crop, size=CLASSIFIER_RESOLUTION, mode="bilinear", antialias=True, align_corners=False)
        seen = (self.classifier.predict(small) > 0.5).to(torch.uint8)
        names = list(self.classifier.attribute_names)
        return seen[:, [names.index(a) for a in generator.attribute_names]]


class Protector:
    """Protects photos one at a time with one defense against each generator."""

    def __init__(self, config: dict, defense: str, generators: list[str], out: Path, jitter: float = CROP_JITTER):
        self.config, self.jitter = config, jitter
        self.device = resolve_device(config["device"])
        self.generators = {g: load_generator(config, g, self.device) for g in generators}
        self.defenses = {g: fitted_defense(config, defense, g) for g in generators}
        first = next(iter(self.defenses.values()))
        self.eps = getattr(first.params, "eps", config["protocol"]["eps"])
        self.labeller = Labeller()
        self.resolution = config["resolution"]
        self.folders = {g: out if len(generators) == 1 else out / g for g in generators}

    def identity(self) -> dict:
        """What a photo's result depends on (a kept result with another identity is redone)."""
        return {"defense": {g: d.identity() for g, d in self.defenses.items()}, "eps": self.eps,
                "resolution": self.resolution, "seed": self.config["seed"], "detector": DETECTOR,
                "crop_jitter": self.jitter,
                "generators": {g: self.config["generators"].get(g, {}) for g in self.generators}}

    def conditions_of(self, generator):
        return lambda crop: generator.targets(self.labeller.labels(crop, generator)).unbind(0)

    def protect(self, photo: Photo, quads: list[Quad], original: Original, generator: str) -> Photo:
        protected, model, defense = photo, self.generators[generator], self.defenses[generator]
        for quad, face in zip(quads, original.faces):
            labels = self.labeller.labels(face.image, model)
            box, pixels, mask = protect_face(defense, model, protected, quad, labels, self.eps, self.resolution,
                                             self.config["seed"], self.jitter)
            protected = protected.with_changes(box, pixels, mask, photo, self.eps)
        return protected

    def one_photo(self, file: Path, name: str) -> dict:
        started = time.time()
        photo = read_photo(file)
        seen = photo.rgb()
        quads = [Quad.from_landmarks(f.landmarks) for f in detect_faces(seen)]
        record = {"photo": str(file), "source": source_stamp(file), "copy": name, "width": photo.size[0],
                  "height": photo.size[1], "mode": photo.mode, "notes": photo.notes, "faces": len(quads),
                  "generators": {}}
        if not quads:
            return {**record, "seconds": time.time() - started}
        original = Original([cut(seen, q, self.resolution) for q in quads], centre_crop(seen, self.resolution))
        for g, model in self.generators.items():
            protected = self.protect(photo, quads, original, g)
            target = self.folders[g] / name
            atomic_write(target, lambda tmp, protected=protected: protected.save_png(tmp))
            written = read_photo(target)
            record["generators"][g] = {**copy_budget(written, photo, quads, self.eps, self.jitter),
                                       **attacker_scores(model, self.conditions_of(model), written.rgb(), original,
                                                         self.resolution)}
        return {**record, "seconds": time.time() - started}


def source_stamp(file: Path) -> dict:
    """What tells a photo replaced under the same name: its size and modification time."""
    stat = file.stat()
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def copy_budget(written: Photo, original: Photo, quads: list[Quad], eps: float, jitter: float) -> dict:
    """The copy as written against the photo: L-inf over the whole photo (on [-1, 1] and in
    the photo's levels), changed pixels outside the faces' boxes, PSNR and SSIM over them."""
    difference = np.abs(written.pixels.astype(np.int64) - original.pixels.astype(np.int64)).max(axis=2)
    inside = np.zeros(difference.shape, dtype=bool)
    psnr, ssim = [], []
    for quad in quads:
        left, top, right, bottom = box = bounds(quad.jittered(jitter), *original.size)
        inside[top:bottom, left:right] = True
        measured = measure(written.tensor(box).unsqueeze(0), original.tensor(box))
        psnr.append(measured["psnr"][0])
        ssim.append(measured["ssim"][0])
    return {"linf": float(difference.max()) / (original.top / 2), "linf_levels": int(difference.max()),
            "within_eps": bool(difference.max() <= original.levels(eps)),
            "changed_outside_faces": int((difference[~inside] > 0).sum()),
            "alpha_unchanged": written.alpha is None or bool(np.array_equal(written.alpha, original.alpha)),
            "face_psnr": float(np.mean(psnr)), "face_ssim": float(np.mean(ssim))}


def protect_photos(config: dict, defense: str, generators: str, photos: str, out: str, command: str,
                   jitter: float = CROP_JITTER) -> str:
    """Protect every photo of `photos` (a file or a folder) with `defense` against
    `generators`, write the copies and report/ into `out`, and return the summary table."""
    from tqdm import tqdm

    from bench.harness.plan import resolve_names

    photos, out = Path(photos).expanduser(), Path(out).expanduser()
    files = photo_files(photos)
    if out.resolve() in {photos.resolve(), photos.resolve().parent if photos.is_file() else None}:
        raise BenchError(f"OUT_FOLDER {out} holds the photos: give the copies a folder of their own")
    writable_folder(out, "OUT_FOLDER")
    config = protect_config(config, defense)
    names = resolve_names(config, defense, NONE, generators)["generators"]
    protector = Protector(config, defense, names, out, jitter)
    identity = protector.identity()
    photos_named = list(zip(files, copy_names(files)))
    records = {name: read_kept(out / REPORT / "photos" / f"{name}.json", identity, file,
                               [protector.folders[g] / name for g in names]) for file, name in photos_named}
    todo = [(file, name) for file, name in photos_named if records[name] is None]
    kept = f" ({len(files) - len(todo)} kept from an earlier run)" if len(todo) < len(files) else ""
    print(f"protecting {len(todo)} photos{kept} with {defense} against {', '.join(names)}; the time left shows "
          "after the first")
    bar = tqdm(todo, desc="protect", unit="photo", dynamic_ncols=True)
    for file, name in bar:
        bar.set_postfix_str(file.name)
        try:
            record = protector.one_photo(file, name)
        except DataError as err:
            record = {"photo": str(file), "source": source_stamp(file), "copy": name, "error": str(err),
                      "faces": 0, "generators": {}}
        atomic_write_json(out / REPORT / "photos" / f"{name}.json", {"identity": identity, "record": record})
        records[name] = record
    for file, name in photos_named:
        if not records[name]["faces"]:
            tqdm.write(f"{file}: {records[name].get('error', 'no face found')}; no copy written", file=sys.stderr)
    return write_protect_report(list(records.values()), protector, defense, config, photos, out, command)


def read_kept(path: Path, identity: dict, photo: Path, copies: list[Path]) -> dict | None:
    """A photo's kept result, if it was made from this photo with these settings and its
    copies exist."""
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = json.dumps(kept.get("identity"), sort_keys=True, default=str) == json.dumps(identity, sort_keys=True,
                                                                                       default=str)
    record = kept.get("record", {})
    if not same or record.get("source") != source_stamp(photo) or (
            record.get("faces") and not all(c.exists() for c in copies)):
        return None
    return record


def csv_rows(records: list[dict]) -> list[dict]:
    rows = []
    for r in records:
        for g, s in r["generators"].items():
            rows.append({"photo": r["photo"], "copy": r["copy"], "generator": g, "width": r["width"],
                         "height": r["height"], "faces": r["faces"], "linf": s["linf"],
                         "linf_levels": s["linf_levels"], "within_eps": s["within_eps"],
                         "changed_outside_faces": s["changed_outside_faces"], "face_psnr": s["face_psnr"],
                         "face_ssim": s["face_ssim"],
                         **{f"{p}_{k}": s[p][k] for p in PATHS for k in ("edit_l2", "dsr")},
                         "faces_found_in_copy": s[DETECTOR_PATH]["faces_found"],
                         "faces_found_after_jpeg90": s[JPEG90]["faces_found"],
                         "seconds": round(r["seconds"], 2), "notes": "; ".join(r.get("notes", []))})
        if not r["generators"]:
            rows.append({"photo": r["photo"], "copy": "", "faces": 0, "notes": r.get("error", "no face found")})
    return rows


def mean_of(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summary(records: list[dict], generator: str) -> dict:
    """One generator's figures over the photos: edits pooled over faces and targets."""
    scored = [r["generators"][generator] for r in records if generator in r["generators"]]

    def pooled(path: str, key: str) -> float | None:
        weights = [s[path]["edits"] for s in scored if s[path][key] is not None]
        values = [s[path][key] for s in scored if s[path][key] is not None]
        return float(np.average(values, weights=weights)) if sum(weights) else None

    return {"generator": generator, "photos": len(scored), "faces": sum(s[DETECTOR_PATH]["faces_protected"]
                                                                        for s in scored),
            "linf": max((s["linf"] for s in scored), default=None),
            "all_within_eps": all(s["within_eps"] for s in scored),
            "changed_outside_faces": sum(s["changed_outside_faces"] for s in scored),
            "face_psnr": mean_of(s["face_psnr"] for s in scored), "face_ssim": mean_of(s["face_ssim"] for s in scored),
            "edit_l2": pooled(DETECTOR_PATH, "edit_l2"), "dsr": pooled(DETECTOR_PATH, "dsr"),
            "edits": sum(s[DETECTOR_PATH]["edits"] for s in scored),
            "faces_found_in_copies": sum(s[DETECTOR_PATH]["faces_found"] for s in scored),
            CENTRE_CROP: {"edit_l2": pooled(CENTRE_CROP, "edit_l2"), "dsr": pooled(CENTRE_CROP, "dsr")},
            JPEG90: {"edit_l2": pooled(JPEG90, "edit_l2"), "dsr": pooled(JPEG90, "dsr"),
                     "faces_found": sum(s[JPEG90]["faces_found"] for s in scored)}}


def write_protect_report(records: list[dict], protector: Protector, defense: str, config: dict, photos: Path,
                         out: Path, command: str) -> str:
    """protect.md (one line per generator), photos.csv (one line per photo and generator)
    and protect.json in `out/report/`."""
    import pandas as pd

    rows = [summary(records, g) for g in protector.generators]
    skipped = [r["photo"] for r in records if not r["faces"]]
    seconds = [r["seconds"] for r in records if r["faces"] and "seconds" in r]
    table = pd.DataFrame([{"generator": r["generator"], "photos": r["photos"], "faces": r["faces"],
                           "L-inf": r["linf"], "face PSNR dB": r["face_psnr"], "face SSIM": r["face_ssim"],
                           "DSR detector": r["dsr"], "DSR centre crop": r[CENTRE_CROP]["dsr"],
                           "DSR after JPEG 90": r[JPEG90]["dsr"], "edit L2 detector": r["edit_l2"],
                           "edits": r["edits"]} for r in rows])
    text = (f"# {defense}: protected copies of {len(records) - len(skipped)} of {len(records)} photos from {photos}\n\n"
            f"PNG copies at each photo's own size; faces found by {DETECTOR} and cut along CelebA-HQ's quad; only "
            f"the pixels those cuts read differ, each within eps = {protector.eps} (L-inf over the whole photo as "
            "written; PSNR and SSIM over the faces' boxes). Measured as an attacker uses the copy: each generator's "
            "edits of the copy's faces (found again by the detector, cut with Pillow; a plain centre crop; the "
            f"detector after re-saving as JPEG 90) against its edits of the original photo's: DSR is the share with "
            f"edit L2 > {DSR.spec.threshold}. One line per photo: photos.csv.\n\n"
            + table.to_markdown(index=False, floatfmt=".4f") + "\n")
    if skipped:
        text += f"\nNo face found, no copy written ({len(skipped)}): " + ", ".join(Path(s).name for s in skipped) + "\n"
    if seconds:
        text += f"\nSeconds per photo: median {np.median(seconds):.1f}, max {max(seconds):.1f}.\n"
    lines = csv_rows(records)
    columns = list(dict.fromkeys(k for row in lines for k in row))
    buffer = io.StringIO()
    csv.DictWriter(buffer, fieldnames=columns).writeheader()
    csv.DictWriter(buffer, fieldnames=columns).writerows(lines)
    atomic_write_text(out / REPORT / "photos.csv", buffer.getvalue())
    atomic_write_text(out / REPORT / "protect.md", text)
    atomic_write_json(out / REPORT / "protect.json", {
        "defense": defense, "eps": protector.eps, "photos": len(records), "protected": len(records) - len(skipped),
        "no_face": skipped, "detector": DETECTOR, "alignment": "CelebA-HQ's quad from five landmarks",
        "labels": "the attribute classifier's reading of each face's aligned crop (probability > 0.5)",
        "folders": {g: str(f) for g, f in protector.folders.items()}, "generators": rows,
        "identity": protector.identity(), "command": command, "harness_version": bench.__version__,
        "git": git_state(), "environment": environment(protector.device), "config": config})
    return text
