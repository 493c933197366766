"""Run profiles. Every setting can be overridden on the command line
(`--set key=value`, dotted keys for nested settings: `--set bypasses.lora.rank=16`).

- quick (default): CPU, offline, the project's small generators at 64 px.
- ci: the smallest sizes, for tests.
- paper: 256 px, official checkpoints, the paper's sizes; meant for a GPU.

Data: with no --data, the quick profile uses the project's demo faces (package
`bench/demo`). Splits are index ranges [start, stop) into the data set's order; each
data set kind has its default (`SPLITS`), applied when --data picks that kind. The
CelebA-HQ ranges follow the usual split: 27001-28000 fine-tune the bypasses and
29001-30000 evaluate (images 1-27000 trained the shipped generators). For CelebA, the
last 2,000 images are StarGAN's test set. Learned and universal defenses fit on the
"defense" split: the defender's own faces, never evaluated; where a data set has too few
faces for a separate range (demo, folder, paper-profile CelebA-HQ) it is the attacker's
fine-tuning range, still disjoint from the evaluated faces.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

from annotated_types import Interval, Len, MinLen
from pydantic import AfterValidator

from bench.contract.errors import ConfigError
from bench.contract.params import Budget, Count, NonNegative, NonNegativeInt, Resolution, Seed, check_value
from bench.contract.registry import registry
from bench.contract.results import DEFAULT_PROTOCOL, LEAKAGE, SCENARIOS, STANDARD
from bench.harness.config import merge
from bench.harness.inputs import make_plugin
from bench.toolkit.attacks import ATTACK_PRECISIONS
from bench.toolkit.device import parse_device

# image quality: FID and KID need pytorch-fid's Inception file, CLIP score open_clip's
# ViT-B-32 weights, the identity metrics FaceNet's graph (each is skipped with one line
# where its file is missing); classifier_cosine stands in for the CLIP score offline
METRICS = ["l2", "ssim", "dsr", "edit_success", "edit_success_control", "fid", "kid", "brisque", "clip_score",
           "classifier_cosine", "identity_to_fake", "identity_to_input"]
NETWORK_METRICS = ("fid", "kid", "identity_to_fake", "identity_to_input")  # a large network per output

SPLITS = {
    "demo": {"finetune": [0, 256], "defense": [0, 256], "eval": [256, 320]},
    "celebahq": {"finetune": [27000, 28000], "defense": [28000, 29000], "eval": [29000, 30000]},
    "celeba": {"finetune": [0, 1000], "defense": [1000, 2000], "eval": [200599, 202599]},
    "folder": {"finetune": [0, 1000], "defense": [0, 1000], "eval": [1000, 2000]},
}
# images_256 holds the first 1,500 CelebA-HQ faces: the first 1,000 fine-tune, the rest evaluate
PAPER_SPLITS = {**SPLITS, "celebahq": {"finetune": [0, 1000], "defense": [0, 1000], "eval": [1000, 1500]}}

# Variants of LoRA patching for the ablations: rank (Table VI), gating (Fig. 8) and
# defensive patching (Table IV; the public recipe: rank 16, 5 epochs)
GENERATORS = ("stargan", "attgan", "hisd")

LORA_VARIANTS = {
    "lora_r4": {"plugin": "lora", "rank": 4},
    "lora_r16": {"plugin": "lora", "rank": 16},
    "lora_r32": {"plugin": "lora", "rank": 32},
    "lora_ungated": {"plugin": "lora", "gated": False},
    "lora_warning": {"plugin": "lora", "warning": True, "rank": 16, "epochs": 5},
    # Table V: defensive patching without MMFA (the pixel loss alone)
    "lora_warning_pixel": {"plugin": "lora", "warning": True, "rank": 16, "epochs": 5, "loss": "pixel"},
}

# The attacker's cost ladder (the leaderboard's first axis). Channel transforms at the
# strengths a photo meets online (JPEG 75, WebP 75, resizing to 50%, blur of 1 px and noise
# of 8 levels are their plugins' defaults, named by the plugin alone)...
TRANSFORM_VARIANTS = {
    **{f"jpeg_q{q}": {"plugin": "jpeg", "quality": q} for q in (95, 90, 50, 30)},
    "webp_q50": {"plugin": "webp", "quality": 50},
    **{f"resize_{round(100 * s)}": {"plugin": "resize", "scale": s} for s in (0.75, 0.25)},
    "blur_s05": {"plugin": "blur", "sigma": 0.5},
    "blur_s2": {"plugin": "blur", "sigma": 2.0},
    "noise_s4": {"plugin": "noise", "sigma": 4.0},
    "noise_s16": {"plugin": "noise", "sigma": 16.0},
}
# ...and LoRA patching on fewer fine-tuning faces than the run's (the same recipe and
# epochs, so fewer faces is also fewer steps: the attacker's data and compute together);
# `lora` itself is the point at all of them
FINETUNE_FACES = (8, 32, 128)
FACES_VARIANTS = {f"lora_faces{n}": {"plugin": "lora", "faces": n} for n in FINETUNE_FACES}
# named sets of bypasses that --bypass takes like a name
BYPASS_SETS = {
    "transforms": ["jpeg_q95", "jpeg_q90", "jpeg", "jpeg_q50", "jpeg_q30", "webp", "webp_q50", "resize_75",
                   "resize", "resize_25", "blur_s05", "blur", "blur_s2", "noise_s4", "noise", "noise_s16", "social"],
    "finetune_faces": [*FACES_VARIANTS, "lora"],
}
# the ladder the reference board climbs; RI, GAT and MaGAT (fine-tuning too, dearer on a CPU) can join it
BYPASS_SETS["ladder"] = ["none", *BYPASS_SETS["transforms"], "comdefend", *BYPASS_SETS["finetune_faces"]]

QUICK = {
    "profile": "quick",
    "resolution": 64,
    "device": "auto",
    "amp": True,            # float16 inference on CUDA (never for gradients); no effect on CPU
    "seed": 0,
    # the perturbation budget every defense is held to (L-inf on [-1, 1]), measured on its
    # protected images; the leaderboard does not rank an entry beyond it (plus tolerance)
    "protocol": dict(DEFAULT_PROTOCOL),
    "data": {"path": None, "dataset": "demo"},
    "splits": SPLITS["demo"],
    "limit": 32,            # evaluation images
    "finetune_limit": 256,  # images that fit trainable bypasses (paper: 1,000)
    "defense_fit_limit": 128,  # images that learned / universal defenses fit on (CMUA: 128)
    # universal defenses (CMUA, ID-Guard) fit across these generators whichever ones a run
    # evaluates, so runs split by generator share one fit; "run": the run's own generators
    "universal_fit_generators": ",".join(sorted(GENERATORS)),
    "batch_size": 32,       # images x targets per forward pass
    # torch's intra-op threads per step (null: its default, every core). CPU results depend
    # on it slightly (about 1e-5 after a LoRA fit), so a set value enters the cache keys
    "threads": None,
    # the precision of sign-gradient steps (PGD in defenses, adversarial fine-tuning and
    # leakage protection; CMUA, which averages signs over images, stays float32): their
    # gradients are used by sign alone; under bf16 autocast 85-91% of the signs agree
    # with float32's, carrying 94-98% of the gradient's magnitude (`bench perf`), the
    # step runs 1.35-2.2x faster on a CPU with AVX-512 BF16, and Disrupting's and
    # DF-RAP's rows of Table I on CelebA-HQ move by at most 0.021 DSR (README). "auto":
    # bf16 where the device computes it natively, else fp32. Other than fp32 it enters
    # the cache keys.
    "attack_precision": "auto",
    # the same inside fits (LoRA patching's, GAT's, MaGAT's and RI's adversarial examples,
    # leakage fits): float32 by default on every machine, so that a fit's recipe, and the
    # fit released with bench for it, is the same on a CPU with AVX-512 BF16 and without
    "fit_attack_precision": "fp32",
    # fits of exactly the recipe a step asks for that come with bench (the quick profile's
    # on the demo faces, `bench/released`) are used instead of fitting (`--refit`: false)
    "released_fits": True,
    "metrics": METRICS,
    "cache": True,
    "generators": {name: {"weights": "shipped"} for name in GENERATORS},
    # official checkpoints are checked by size and SHA-256 (`bench download`): a run refuses
    # one that is not the released file unless this is set (recorded in run.json)
    "allow_unverified_weights": False,
    # per-plugin parameter overrides, e.g. {"disrupting": {"steps": 20}}. Sized for a CPU:
    # small perturbation generators trained a few hundred steps at lr 1e-3 (published:
    # 1e-4 for thousands of steps; PG at 1e-4 reached DSR 0.63 on StarGAN after 500
    # steps, at 1e-3 0.88 after 200 on the demo faces; on held-out CelebA-HQ faces 200
    # steps gave 0.57, 200 at lr 3e-3 0.64, 400 at 1e-3 0.83); and 40 PGD steps for the defenses that optimise
    # through random compressions: with 10 (their published setting, kept by the paper
    # profile) they do not converge at 64 px (DF-RAP on AttGAN: DSR 0.15 without any
    # bypass, 0.39 with 40 steps; on the demo faces RAW on StarGAN 0.77, 0.89 with 20 and
    # 0.94 with 40: `results/make.sh pgd-steps`)
    "defenses": {"pg": {"base_channels": 16, "depth": 3, "iterations": 400, "lr": 1e-3},
                 # MGDA on L2-normalised gradients (its authors' normalisation): on the raw ones the
                 # min-norm weights follow HiSD's tiny gradient and ID-Guard reached StarGAN DSR 0.17
                 # on held-out CelebA-HQ faces; normalised, the weights stay near 1/3 each and it
                 # reaches 0.99 (AttGAN 0.00 either way at this budget)
                 "idguard": {"ngf": 16, "blocks": 3, "iterations": 300, "batch_size": 8, "lr": 1e-3,
                             "mgda_normalisation": "l2"},
                 "dfrap": {"steps": 40}, "raw": {"steps": 40}},
    # MMFA offline: the project's attribute classifier stands in for ResNet-50 and BLIP
    # (no pretrained weights offline; recorded in every result as the lora parameters)
    # GAT and MaGAT retrain the whole generator for 20 epochs by default (inferred from the
    # paper's Table III times); on a CPU 3, still longer than LoRA patching's one epoch.
    # RI: 4 residual blocks of 32 channels instead of 16 of 64.
    # LoRA patching: 4 epochs over the 256 fine-tuning faces (the paper: 1 over 1,000).
    # On held-out CelebA-HQ faces Disrupting kept, through the AttGAN patch, DSR 0.056
    # with 1 epoch, 0.006 with 2 and 0.000 with 4; in the leakage scenario (StarGAN /
    # AttGAN) 0.14 / 0.17, 0.056 / 0.075 and 0.044 / 0.038. On the demo faces, StarGAN's
    # leakage was 0.200 with 2 epochs, 0.112 with 3 and 0.050 with 4 (cost: 4x one epoch)
    "bypasses": {"lora": {"batch_size": 8, "epochs": 4, "image_features": "classifier_features",
                          "semantic_features": "classifier_attributes"},
                 **LORA_VARIANTS, **TRANSFORM_VARIANTS, **FACES_VARIANTS,
                 "gat": {"epochs": 3, "batch_size": 8, "d_warmup": 100},
                 "magat": {"epochs": 3, "batch_size": 8},
                 "ri": {"blocks": 4, "channels": 32, "batch_size": 8}},
    "bypass_sets": BYPASS_SETS,
    # transfer: every defense's protections made against the other generators (the
    # standard scenario's own, from the cache; a universal defense is fitted again across
    # the others), edited by each generator with no bypass
    "scenarios": list(SCENARIOS),
    # the leakage scenario (Fig. 5) re-protects every evaluation image against each
    # bypassed pipeline of Table I; on a CPU with Disrupting only (10 PGD steps; the
    # compression-robust defenses take 40, the learned ones would be refitted against
    # each pipeline), with every defense in the paper profile
    "leakage": {"defenses": "disrupting", "bypasses": "jpeg,comdefend,ri,lora"},
    # what the transfer scenario's cells score (those of the run's metrics): whether the
    # protection still disrupts. A per-target defense's cell edits every image made for a
    # face with every target (25 outputs a face for StarGAN to AttGAN), where FID, KID,
    # BRISQUE and FaceNet would take about 40 s a cell on 2 cores
    "transfer": {"metrics": ["l2", "ssim", "dsr"]},
    # FID and KID on protected outputs: the reports read them only under a defensive patch
    # (Table IV, always scored); under any other bypass they took 4 of the main job's 25
    # minutes on 2 cores (its 24 protected cells: 418 s, 161 s without). true scores them there too
    "set_metrics_on_protected": False,
    # which bypasses make up which table of `bench report` (names absent from a run are
    # skipped), and the defense whose protected images the figures show
    "report": {"table1": ["none", "jpeg", "comdefend", "ri", "lora"],
               "table2": ["jpeg", "comdefend", "ri", "lora"],
               "table3": {"defense": "disrupting", "bypasses": ["gat", "magat", "lora"]},
               "table4": ["lora_warning"],
               "table5": {"without": "lora_warning_pixel", "with": "lora_warning"},
               "table6": ["lora_r4", "lora", "lora_r16", "lora_r32"],
               "gating": ["lora", "lora_ungated"],
               "defensive": ["lora_warning", "lora_warning_pixel"],
               "figure_defense": "disrupting"},
}

CI = merge(QUICK, {
    "profile": "ci",
    "attack_precision": "fp32",  # the same numbers on every machine the tests run on
    # the Inception and FaceNet metrics take seconds per cell on a CPU: tests that need them ask for them
    "metrics": [m for m in METRICS if m not in NETWORK_METRICS],
    "scenarios": [STANDARD, LEAKAGE],  # tests that need the transfer scenario ask for it
    "limit": 4,
    "finetune_limit": 8,
    "defense_fit_limit": 8,
    "universal_fit_generators": "run",
    "defenses": {"disrupting": {"steps": 3}, "cmua": {"steps": 2}, "dfrap": {"steps": 2}, "raw": {"steps": 2},
                 "pg": {"base_channels": 4, "depth": 2, "critic_channels": 4, "iterations": 2, "batch_size": 2},
                 "idguard": {"ngf": 4, "blocks": 1, "iterations": 2, "batch_size": 2}, "antiforgery": {"steps": 3}},
    "bypasses": {"lora": {"batch_size": 4, "pgd_steps": 2, "epochs": 1}, "jpeg": {}, "lora_warning": {"epochs": 1},
                 "gat": {"epochs": 1, "batch_size": 4, "pgd_steps": 2, "d_warmup": 2},
                 "magat": {"epochs": 1, "batch_size": 4, "pgd_steps": 2},
                 "ri": {"blocks": 1, "channels": 8, "batch_size": 4, "pgd_steps": 2},
                 "comdefend": {"epochs": 1, "batch_size": 4, "crop": 16}},
})

PAPER = merge(QUICK, {
    "profile": "paper",
    "attack_precision": "fp32",  # the public codes' precision
    "resolution": 256,
    "data": {"path": None, "dataset": "celebahq"},
    "splits": PAPER_SPLITS["celebahq"],
    "limit": 500,
    "finetune_limit": 1000,
    "batch_size": 8,
    "generators": {name: {"weights": "official"} for name in GENERATORS},
    "defense_fit_limit": 1000,
    "defenses": {"pg": {"base_channels": 64, "depth": 4, "iterations": 2000, "lr": 1e-4},  # the defaults
                 "idguard": {"ngf": 64, "blocks": 6, "iterations": 10000, "batch_size": 3, "lr": 1e-4,
                             "mgda_normalisation": "none"},
                 "dfrap": {"steps": 10}, "raw": {"steps": 10}},
    # the public recipe: one epoch (the quick profile's 2 are reset here; variants take
    # their plugin's settings, then their own)
    "bypasses": {"lora": {"batch_size": 4, "epochs": 1, "image_features": "resnet50", "semantic_features": "blip"},
                 "gat": {"epochs": 20, "batch_size": 4, "d_warmup": 500}, "magat": {"epochs": 20, "batch_size": 4},
                 "ri": {"blocks": 16, "channels": 64, "batch_size": 4},
                 "comdefend": {"weights": "official"}},
    "leakage": {"defenses": "all", "bypasses": "jpeg,comdefend,ri,lora"},
})
# the fine-tuning curve up to the paper's 1,000 faces (`lora` itself)
PAPER["bypasses"]["lora_faces256"] = {"plugin": "lora", "faces": 256}
PAPER["bypass_sets"]["finetune_faces"] = [*FACES_VARIANTS, "lora_faces256", "lora"]
PAPER["bypass_sets"]["ladder"] = ["none", *BYPASS_SETS["transforms"], "comdefend",
                                  *PAPER["bypass_sets"]["finetune_faces"]]

PROFILES = {"quick": QUICK, "ci": CI, "paper": PAPER}


def _start_before_stop(split: list[int]) -> list[int]:
    if split[0] >= split[1]:
        raise ValueError("must be [START, STOP) with START < STOP")
    return split


Split = Annotated[list[NonNegativeInt], Len(2, 2), AfterValidator(_start_before_stop)]

# What each setting allows (dotted names). The plugin tables are checked against each
# plugin's `Params` (check_settings makes every plugin they configure), the split
# ranges against the data set when it loads.
SETTINGS: dict[str, Any] = {
    "profile": Literal[tuple(PROFILES)],
    "resolution": Resolution,
    "device": str,
    "amp": bool,
    "seed": Seed,
    "protocol.eps": Budget,
    "protocol.tolerance": NonNegative,
    "protocol.break_threshold": Annotated[float, Interval(ge=0, le=1)],  # DSR at or below which a defense is broken
    "data.path": str | None,
    "data.dataset": Literal[tuple(SPLITS)],
    **{f"splits.{name}": Split for name in ("finetune", "defense", "eval")},
    "limit": Count | None,  # None: the whole split
    "finetune_limit": Count | None,
    "defense_fit_limit": Count | None,
    "universal_fit_generators": Annotated[str, MinLen(1)],  # "run" or a comma list of generators
    "batch_size": Count,
    "threads": Count | None,
    "attack_precision": Literal[("auto", *ATTACK_PRECISIONS)],
    "fit_attack_precision": Literal[("auto", *ATTACK_PRECISIONS)],
    "released_fits": bool,
    "allow_unverified_weights": bool,
    "metrics": Annotated[list[str], MinLen(1)],
    "cache": bool,
    "bypass_sets": dict[str, Annotated[list[str], MinLen(1)]],
    "scenarios": Annotated[list[Literal[SCENARIOS]], MinLen(1)],
    "leakage.defenses": Annotated[str, MinLen(1)],
    "leakage.bypasses": Annotated[str, MinLen(1)],
    "transfer.metrics": Annotated[list[str], MinLen(1)],
    "set_metrics_on_protected": bool,
}

# a generator's table: its weights, "shipped", "official" or a checkpoint's path
GENERATOR_SETTINGS = {"weights": Annotated[str, MinLen(1)]}


def check_settings(config: dict) -> dict:
    """Every setting of `config` within what it allows, and every plugin table naming an
    installed plugin (or a variant of one) with parameters it accepts; else one
    ConfigError line."""
    for name, allowed in SETTINGS.items():
        node = config
        for part in name.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        check_value(allowed, node, f"setting {name!r}")
    parse_device(config["device"])
    if config["universal_fit_generators"] != "run":
        registry("generators").resolve(config["universal_fit_generators"])
    for kind in ("generators", "defenses", "bypasses"):
        for label, table in config[kind].items():
            if not isinstance(table, dict):
                raise ConfigError(f"setting {kind}.{label} must be a table of parameters (--set "
                                  f"{kind}.{label}.NAME=VALUE), got {table!r}")
            if label not in registry(kind).names() and not (isinstance(table, dict) and "plugin" in table):
                try:
                    registry(kind).entry(label)
                except ConfigError as err:
                    raise ConfigError(f"setting {kind}.{label}: {err}") from None
            if kind == "generators":
                check_generator_table(label, table)
            else:
                make_plugin(kind, label, config)  # checks the table's parameters
    return config


def check_generator_table(label: str, table: dict) -> None:
    for key, value in table.items():
        if key not in GENERATOR_SETTINGS:
            raise ConfigError(f"setting generators.{label} has no setting {key!r} "
                              f"(settings: {', '.join(GENERATOR_SETTINGS)})")
        check_value(GENERATOR_SETTINGS[key], value, f"setting 'generators.{label}.{key}'")


def default_splits(profile: str, dataset: str, size: int | None = None) -> dict:
    """The splits of a data set kind; a folder of fewer than 2,000 images (`size`) is
    halved instead: the first half fine-tunes and fits defenses, the second is evaluated."""
    if dataset == "folder" and size is not None and size < SPLITS["folder"]["eval"][1]:
        half = max(1, size // 2)
        return {"finetune": [0, half], "defense": [0, half], "eval": [half, max(half + 1, size)]}
    return copy.deepcopy((PAPER_SPLITS if profile == "paper" else SPLITS)[dataset])


def get_profile(name: str) -> dict:
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return copy.deepcopy(PROFILES[name])
