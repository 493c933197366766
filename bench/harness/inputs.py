"""What a run loads from its configuration: data splits, generators and plugins (with
their configured parameters and variants), and the metrics that can run here."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

from bench.contract.errors import ConfigError
from bench.contract.plugins import FitTarget
from bench.contract.registry import registry
from bench.harness.cache import images_identity
from bench.toolkit.classifier import label_faces
from bench.toolkit.data import FaceSet, load_faceset


@dataclass
class Split:
    faces: FaceSet
    images: torch.Tensor
    identity: dict


def load_data(config: dict, announce: bool = False) -> FaceSet:
    """The run's face set; one without attribute labels (a folder of a person's own
    photos) gets the labels the attribute classifier infers (said in one line if
    `announce`)."""
    data = config["data"]
    faces = load_faceset(data["path"], data["dataset"], config["resolution"])
    if faces.attributes is None:
        faces = label_faces(faces)
        if announce:
            tqdm.write(f"note: {faces.root} has no attribute labels: the attribute classifier inferred them for its "
                       f"{len(faces)} images (probability > 0.5; recorded in run.json)")
    return faces


SPLIT_LIMITS = {"eval": "limit", "finetune": "finetune_limit", "defense": "defense_fit_limit"}


def load_split(config: dict, faces: FaceSet, name: str, limit: int | None = None) -> Split:
    """Split `name` of `faces` (its configured range and size limit, or `limit`)."""
    start, stop = config["splits"][name]
    if stop > len(faces):
        raise ConfigError(f"the {name} split [{start}, {stop}) reaches beyond the {len(faces)} images of "
                          f"{faces.root}; set --set splits.{name}=[START,STOP] with STOP <= {len(faces)}")
    limit = config[SPLIT_LIMITS[name]] if limit is None else limit
    part = faces.subset(start, stop)
    part = part.subset(0, limit) if limit else part
    images = part.load(progress=len(part) > 200)
    return Split(part, images, {**part.identity(), **images_identity(part.ids, images)})


def load_generator(config: dict, name: str, device: torch.device | str = "cpu"):
    """The generator `name` with the profile's weights, frozen, in inference mode."""
    weights = config["generators"].get(name, {}).get("weights", "shipped")
    generator = registry("generators").get(name).load(weights, config["resolution"])
    return generator.to(device).eval().requires_grad_(False)


def variants(config: dict, kind: str) -> dict[str, str]:
    """Names the configuration declares as variants of a plugin: name -> plugin."""
    return {name: table["plugin"] for name, table in config[kind].items()
            if isinstance(table, dict) and "plugin" in table}


def make_plugin(kind: str, name: str, config: dict):
    """The plugin (or variant) `name` with its configured parameters; `label` is the name
    the results use. A variant's `plugin` must be a plugin, not another variant."""
    settings = dict(config[kind].get(name, {}))
    base = settings.pop("plugin", name)
    if base != name:  # a variant: the plugin's configured settings, then its own
        settings = {**config[kind].get(base, {}), **settings}
    plugin = registry(kind).get(base)(**settings)
    plugin.label = name
    return plugin


def fit_target(model, labels: torch.Tensor) -> FitTarget:
    """A generator (or bypassed pipeline) a defense fits against, with its conditions."""
    try:
        unedited = model.unedited_conditions(labels)
    except NotImplementedError:
        unedited = None
    return FitTarget(model, model.targets(labels), unedited)


def usable_metrics(config: dict) -> tuple[list[str], dict]:
    """The configured metrics that can run here, and why each of the others cannot (one
    line each, printed: a metric is never silently left out)."""
    metrics = registry("metrics")
    usable, skipped = [], {}
    for name in metrics.resolve(config["metrics"]):
        reason = metrics.get(name).missing()
        if reason:
            skipped[name] = reason
            tqdm.write(f"note: metric {name} skipped: {reason}")
        else:
            usable.append(name)
    return usable, skipped


def plugin_origins(config: dict, names: dict) -> dict:
    """Where each plugin of the run came from (distribution, its version, entry point) and
    its metadata (paper, link, licence): kind -> label -> origin (a variant: its plugin's)."""
    origins = {}
    for kind in ("defenses", "bypasses", "generators"):
        declared = variants(config, kind) if kind != "generators" else {}
        origins[kind] = {label: registry(kind).origin(declared.get(label, label)) for label in names[kind]}
    return origins
