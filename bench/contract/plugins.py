"""The contracts every defense, bypass and generator plugin fulfils.

A plugin is a class with a `name`, a `version`, paper/licence metadata and a
`Params` dataclass of its settings. Its `version` and params enter every cache key,
so changing either recomputes what depends on it. Tensors are NCHW in [-1, 1].
Conditions are tensors shaped (T, N, ...): one edit target t for each image n.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from bench.contract.errors import ConfigError, WeightsError
from bench.contract.io import load_tensors, save_tensors, tensors_sha256
from bench.contract.params import build_params
from bench.contract.results import (  # noqa: F401  (DEFAULT_EPS: part of the plugin API, bench.contract.DEFAULT_EPS)
    CHANNEL_TRANSFORM,
    DEFAULT_EPS,
    FINE_TUNING,
    RUNGS,
)


@dataclasses.dataclass
class NoParams:
    pass


def weights_root() -> Path:
    """Where official checkpoints live: $BENCH_WEIGHTS or the user data folder."""
    if "BENCH_WEIGHTS" in os.environ:
        root = Path(os.environ["BENCH_WEIGHTS"]).expanduser()
        if root.exists() and not root.is_dir():
            raise WeightsError(f"$BENCH_WEIGHTS {root} is a file, not a folder of weights")
        return root
    import platformdirs

    return Path(platformdirs.user_data_dir("deepfake-defense-bench")) / "weights"


class Plugin:
    """Common metadata and parameter handling."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    paper: ClassVar[str] = ""
    url: ClassVar[str] = ""  # where the method's paper or code lives (shown on the leaderboard)
    licence: ClassVar[str] = "MIT (this implementation)"
    Params: ClassVar[type] = NoParams
    kind_name: ClassVar[str] = "plugin"

    def __init__(self, **params: Any):
        self.params = build_params(self.Params, params, f"{self.kind_name} {self.name!r}")
        self.label = self.name  # the name results use: a variant's own (set by the runner)

    def identity(self) -> dict:
        """What determines this plugin's results: goes into cache keys and run.json."""
        return {"name": self.name, "version": self.version,
                "params": dataclasses.asdict(self.params)}

    def check_ready(self) -> None:
        """Find and load every file (weights, feature networks) this plugin will read,
        raising WeightsError if one is missing or wrong: a run calls it before it reads
        an image or fits anything. Nothing by default."""


@dataclasses.dataclass
class FitTarget:
    """A generator a defense fits against, with its conditions for the fitting images."""
    generator: "Generator"
    conditions: torch.Tensor  # (T, N, ...) the edit targets
    unedited: torch.Tensor | None = None  # (1, N, ...) each image's own attributes, if known


class Defense(Plugin):
    """A proactive defense: perturbs images so that a generator's edits fail.

    `protect` gets x (N, 3, H, W) and conditions (T, N, ...) on the CPU, computes on
    the generator's device (moving a batch at a time) and returns, on the CPU, one
    protected image per (target, image): shape (T, N, 3, H, W), with
    |x_protected - x| <= eps and values in [-1, 1]. A defense that makes one
    perturbation per image (or one for all images) returns it expanded over targets.
    """

    kind_name = "defense"
    randomised: ClassVar[bool] = True  # uses the seed (random start, sampling)
    # settings under which `bench validate` (and the tests) exercise the plugin in seconds
    smoke_params: ClassVar[dict] = {}
    # the parameter a fit's time grows in proportion to (iterations, images), if it has a
    # fit: `bench perf` shrinks it with the data to time a small copy of a run
    fit_length: ClassVar[str | None] = None
    # settings under which `protect` makes one protected image per image, the same for
    # every target (`bench protect` writes one copy of each photo); {}: it always does;
    # None: not declared (`bench protect` takes its outputs only if they are the same)
    per_image_settings: ClassVar[dict | None] = None

    def protect(self, x: torch.Tensor, generator: "Generator", conditions: torch.Tensor,
                seed: int) -> torch.Tensor:
        raise NotImplementedError

    # --- learned and universal defenses ---------------------------------------------
    def fit_scope(self) -> str | None:
        """What a fit depends on, hence what the runner fits it against and caches it by:
        None (nothing to fit), "generator" (the generator being protected against),
        "generators" (all generators of the run at once, e.g. a cross-model universal
        perturbation) or "images" (the fitting images alone)."""
        return None

    def fit(self, images: torch.Tensor, targets: list["FitTarget"], seed: int,
            device: torch.device) -> tuple[dict[str, torch.Tensor], dict]:
        """Learn from `images` (N, 3, H, W) on the CPU against each of `targets` (a generator
        on `device` with its conditions for these images; empty for scope "images").
        Returns the learned tensors and JSON-able info; `load_state` must restore the very
        same defense from them."""
        raise NotImplementedError

    def load_state(self, state: dict[str, torch.Tensor], info: dict) -> None:
        raise NotImplementedError


class Bypass(Plugin):
    """An attacker's bypass: either an input purifier or a patch of the generator.

    Purifiers implement `purify(x) -> x`; patches implement `patch(generator) -> generator`.
    Trainable bypasses implement `fit(generator, images, conditions, seed, device)` on
    the fine-tuning split, returning a dict of tensors plus JSON-able info (with
    `train_seconds`, `trainable_params` and a `loss_curve`), which the runner caches,
    and `load_state` to restore it. `fit` must leave `generator` untouched.
    """

    kind_name = "bypass"
    kind: ClassVar[str] = "purifier"  # or "patch"
    trainable: ClassVar[bool] = False
    # what a fit depends on: "generator" (fitted against each generator, e.g. a patch) or
    # "images" (the fine-tuning images alone, e.g. a compression network): fitted once
    fit_scope: ClassVar[str] = "generator"
    # gradients flow through `purify` (the leakage scenario optimises through it; others
    # get straight-through gradients)
    differentiable: ClassVar[bool] = True
    # settings under which `bench validate` (and the tests) exercise the plugin in seconds
    smoke_params: ClassVar[dict] = {}
    # what the attacker needs, the rung of the leaderboard's cost ladder (bench.contract.results.RUNGS):
    # 0 nothing, 1 a channel transform (no model, no data), 2 a pretrained purifier (inference
    # only), 3 fine-tuning (the generator's weights and faces). None: 3 where it fits, else 1
    rung: ClassVar[int | None] = None
    # the parameter that sets how hard a channel transform hits (JPEG's quality, blur's
    # sigma), the x axis of the robustness curves (None where it has none), and which
    # way it hits harder ("higher" sigma, "lower" quality)
    strength: ClassVar[str | None] = None
    stronger: ClassVar[str] = "higher"

    def attack_cost(self) -> dict:
        """What this bypass, as configured, declares it costs the attacker: its rung and, for a
        fit, the fine-tuning faces it asks for (`faces`: None for all the run's) and its epochs.
        What a fit really spent (seconds, device, faces, trainable parameters) is measured and
        written to costs.jsonl."""
        rung = self.rung if self.rung is not None else (FINE_TUNING if self.trainable else CHANNEL_TRANSFORM)
        if rung not in RUNGS:
            raise ConfigError(f"bypass {self.name!r} declares rung {rung!r}; rungs: {RUNGS}")
        fits = self.trainable
        strength = None if self.strength is None else {
            "name": self.strength, "value": getattr(self.params, self.strength), "stronger": self.stronger}
        return {"plugin": self.name, "rung": rung, "rung_name": RUNGS[rung],
                "faces": getattr(self.params, "faces", None) if fits else 0,
                "epochs": getattr(self.params, "epochs", None) if fits else None, "strength": strength}

    def fitting_images(self, images: torch.Tensor) -> torch.Tensor:
        """The fine-tuning images a fit uses: the first `faces` of the run's where the
        bypass's params declare `faces` (the fine-tuning budget), else all of them."""
        faces = getattr(self.params, "faces", None)
        return images if faces is None else images[:faces]

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def surrogate(self, x: torch.Tensor) -> torch.Tensor:
        """A differentiable approximation of `purify` whose gradient stands in for the one a
        non-differentiable purifier lacks: the identity (BPDA) unless a purifier overrides it."""
        return x

    def purify_for_gradients(self, x: torch.Tensor) -> torch.Tensor:
        """`purify(x)` as an adaptive (leakage-scenario) defender differentiates it: itself
        where it is differentiable, else its exact output with `surrogate`'s gradient."""
        if self.differentiable:
            return self.purify(x)
        with torch.no_grad():
            purified = self.purify(x)
        approximation = self.surrogate(x)
        return approximation + (purified - approximation).detach()

    def patch(self, generator: "Generator") -> "Generator":
        raise NotImplementedError

    def pipeline(self, generator: "Generator") -> "Pipeline":
        """What this bypass makes of `generator`: the pipeline a cell runs and a
        leakage-scenario defender attacks (the patched generator, or the generator
        behind this purifier). Call it after `fit` or `load_state`."""
        if self.kind == "patch":
            return Pipeline(self.patch(generator))
        return Pipeline(generator, purifier=self)

    def fit(self, generator: "Generator", images: torch.Tensor, conditions: torch.Tensor,
            seed: int, device: torch.device) -> tuple[dict[str, torch.Tensor], dict]:
        raise NotImplementedError

    def load_state(self, state: dict[str, torch.Tensor], info: dict) -> None:
        raise NotImplementedError

    # --- defensive patches: outputs meant to differ from the original fake ----------
    @property
    def defensive(self) -> bool:
        """True for a defensive patch (e.g. one that adds a visible warning mark): the
        runner scores it against `intended`, and not in the leakage scenario."""
        return False

    def intended(self, clean: torch.Tensor) -> torch.Tensor:
        """The outputs this bypass means to produce, given the original generator's outputs
        on clean images (..., 3, H, W): those outputs themselves, for a bypass."""
        return clean

    def mark_region(self, size: int) -> torch.Tensor | None:
        """(H, W) bool: where a defensive patch's outputs are meant to differ (None: nowhere)."""
        return None


class Pipeline(nn.Module):
    """A generator as a bypass leaves it: `model` (the generator, or its patched copy)
    behind an optional input purifier. `purify` is the purifier's exact output (the
    identity for patches); `forward` is what an adaptive defender differentiates:
    `purify_for_gradients` then the model. Everything else (targets, feature layer,
    name) is the model's."""

    def __init__(self, model: nn.Module, purifier: Bypass | None = None):
        super().__init__()
        self.model = model
        self.purifier = purifier

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.purifier is None else self.purifier.purify(x)

    def forward(self, x, c):
        if self.purifier is not None:
            x = self.purifier.purify_for_gradients(x)
        return self.model(x, c)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)


class Generator(nn.Module):
    """A face-editing generator: `forward(x, condition) -> y`.

    Subclasses define `configs` (named architecture settings, incl. 'official'),
    `official_checkpoint` facts, `attribute_names` (the labels its targets need) and
    `targets(labels)`, which turns N x A labels into (T, N, ...) conditions. Those
    with a training recipe expose it through `recipe(resolution)` (a `Generator.Recipe`),
    which adversarial training of the whole generator (GAT) reuses.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    paper: ClassVar[str] = ""
    licence: ClassVar[str] = ""
    configs: ClassVar[dict[str, dict]] = {}
    # file name, wrapper key (None for a bare state dict), resolution, where to get it; and,
    # where known, the released file's `bytes` and `sha256` (what `bench download` and the
    # paper profile verify), `others` (sha256 -> which other release a file with it is) and
    # `alternatives` (other releases' file names, accepted, unverified)
    official_checkpoint: ClassVar[dict] = {}
    optional_state_keys: ClassVar[tuple[str, ...]] = ()
    recipe_module: ClassVar[str | None] = None  # "package.module" of its training recipe, if it has one

    def __init__(self, **config):
        super().__init__()
        self.config = dict(config)

    # --- the editing contract -------------------------------------------------------
    @property
    def attribute_names(self) -> list[str]:
        raise NotImplementedError

    def target_names(self) -> list[str]:
        raise NotImplementedError

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # --- what the edits ask for (the edit-success metrics need these) ----------------
    def target_values(self, labels: torch.Tensor) -> torch.Tensor:
        """(T, N) 0/1: the value target t asks attribute `target_names()[t]` to take."""
        raise NotImplementedError

    def unedited_conditions(self, labels: torch.Tensor) -> torch.Tensor:
        """(1, N, ...) conditions asking for no edit (each image's own attributes)."""
        raise NotImplementedError

    def feature_module(self) -> nn.Module | None:
        """The layer whose output counts as the generator's mid-level features (defenses
        such as ID-Guard distort them too); None if the generator names none."""
        return None

    # --- its own training recipe (bypasses that retrain the whole generator: GAT) -----
    class Recipe:
        """A generator's GAN training recipe as reusable pieces: a fresh critic, the
        optimisers and one training iteration (the losses and the critic/generator
        schedule), written once and used both by the generator's `train_recipe` and by
        adversarial fine-tuning of the whole generator.

        A batch (built by `batch`) holds the clean images `x`, which the losses
        reconstruct, and `x_in`, what the generator and the critic take as real inputs:
        x itself in ordinary training, adversarial examples in adversarial training.
        """

        def discriminator(self) -> nn.Module:
            """A fresh critic sized for this generator and resolution."""
            raise NotImplementedError

        def optimisers(self, G: nn.Module, D: nn.Module) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
            """The recipe's optimisers of the generator and of the critic."""
            raise NotImplementedError

        def unedited(self, conditions: torch.Tensor) -> torch.Tensor:
            """(1, N, ...) each image's unedited condition (its own attributes, as far as
            the recipe needs them), recovered from its edit targets (T, N, ...)."""
            raise NotImplementedError

        def batch(self, G: nn.Module, x: torch.Tensor, x_in: torch.Tensor, c_org: torch.Tensor,
                  c_trg: torch.Tensor):
            """The recipe's inputs for clean images x, generator inputs x_in, their unedited
            conditions c_org and one edit target c_trg each (N, ...)."""
            raise NotImplementedError

        def train_iteration(self, iteration: int, G: nn.Module, D: nn.Module, g_opt, d_opt, batch) -> dict:
            """The updates the recipe makes at `iteration` (0-based), in its order; returns
            the logged losses, with the optimised totals as 'D/loss' and 'G/loss'."""
            raise NotImplementedError

        def train_discriminator(self, G: nn.Module, D: nn.Module, d_opt, batch) -> dict:
            """One critic update against the generator, which stays as it is."""
            raise NotImplementedError

        @staticmethod
        def unedited_from_targets(conditions: torch.Tensor, changed: list[set[int]]) -> torch.Tensor:
            """(1, N, A) attribute conditions recovered from edit targets (T, N, A): each
            attribute read from a target that leaves it alone (`changed[t]`: the
            attributes target t may change)."""
            if conditions.size(0) != len(changed):
                raise ConfigError(f"expected {len(changed)} edit targets per image, got {conditions.size(0)}")
            columns = []
            for j in range(conditions.size(-1)):
                keeper = next((t for t, edits in enumerate(changed) if j not in edits), None)
                if keeper is None:
                    raise ConfigError(f"every edit target may change attribute {j}, so its own value is unknown")
                columns.append(conditions[keeper, :, j])
            return torch.stack(columns, -1).unsqueeze(0)

        @staticmethod
        def update(opt: torch.optim.Optimizer, loss: torch.Tensor,
                   clip: tuple[nn.Module, float] | None = None) -> float:
            """The optimiser step every recipe shares: clear, backpropagate, optionally clip
            the gradient norm of a module's parameters, step. Returns the loss."""
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(clip[0].parameters(), clip[1])
            opt.step()
            return loss.item()

    def recipe(self, resolution: int, **settings) -> "Generator.Recipe":
        """This generator's own training recipe at `resolution`, for fine-tuning all of it
        with a fresh critic; `settings` override the recipe's (its TrainParams fields)."""
        return self.recipe_functions("to fine-tune it with").recipe_for(self, resolution, settings)

    @classmethod
    def train_recipe(cls, params, faceset, out_dir: Path, device: torch.device, export: Path | None = None,
                     command: str = "") -> "Generator":
        """Train one from scratch with `params` (a `TrainParams`) on `faceset`, resumably in
        `out_dir`; the trained generator, exported to `export` if set."""
        return cls.recipe_functions("to train it with").train(cls, params, faceset, out_dir, device, export, command)

    @classmethod
    def recipe_functions(cls, purpose: str):
        """The module of its training recipe (one ConfigError line where it has none)."""
        if cls.recipe_module is None:
            raise ConfigError(f"generator {cls.name!r} has no training recipe {purpose}")
        return importlib.import_module(cls.recipe_module)

    # --- identity -------------------------------------------------------------------
    def weight_hash(self) -> str:
        """Content hash of the current weights (recomputed each time: weights can change
        in place, e.g. under fine-tuning, and a stale hash would reuse wrong cache entries)."""
        return tensors_sha256(self.state_dict())

    def identity(self) -> dict:
        return {"name": self.name, "version": self.version, "config": self.config,
                "weights_sha256": self.weight_hash()}

    # --- loading --------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: str | dict) -> "Generator":
        if isinstance(config, str):
            if config not in cls.configs:
                raise ConfigError(f"generator {cls.name!r} has no config {config!r} "
                                  f"(configs: {', '.join(cls.configs)})")
            config = cls.configs[config]
        return cls(**config)

    @classmethod
    def shipped_weights_path(cls, resolution: int) -> Path:
        module_dir = Path(sys.modules[cls.__module__].__file__).parent
        return module_dir / "weights" / f"{cls.name}_{resolution}.safetensors"

    def load_state_strict(self, state: dict[str, torch.Tensor], source: str) -> None:
        state = dict(state)
        own = self.state_dict()
        for key in self.optional_state_keys_present(own):
            state.setdefault(key, own[key])
        try:
            self.load_state_dict(state, strict=True)
        except RuntimeError as err:
            first = str(err).strip().splitlines()
            detail = " ".join(line.strip() for line in first[:3])
            raise WeightsError(f"{source} does not fit {self.name} {self.config}: {detail}") from None

    def optional_state_keys_present(self, own: dict) -> list[str]:
        return [k for k in own if k.rsplit(".", 1)[-1] in self.optional_state_keys]

    @classmethod
    def load_official(cls, path: str | Path, config: str | dict = "official") -> "Generator":
        """Load an official checkpoint (torch pickle, read with weights_only=True)."""
        path = Path(path)
        if not path.exists():
            raise WeightsError(
                f"official {cls.name} checkpoint not found at {path}; "
                f"run `bench download {cls.name}` to see where to get "
                f"{cls.official_checkpoint.get('file', 'it')}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle, zip and unsupported-global errors alike
            raise WeightsError(f"cannot read checkpoint {path}: {err}".splitlines()[0]) from None
        key = cls.official_checkpoint.get("key")
        if key is not None:
            if not isinstance(state, dict) or key not in state:
                raise WeightsError(f"{path} is not a {cls.name} checkpoint: no {key!r} entry")
            state = state[key]
        model = cls.from_config(config)
        model.load_state_strict(state, str(path))
        return model

    @classmethod
    def load_file(cls, path: str | Path) -> "Generator":
        """Load weights saved by `save` (safetensors with the config in its metadata)."""
        path = Path(path)
        if not path.exists():
            raise WeightsError(f"{cls.name} weights not found at {path}")
        tensors, meta = load_tensors(path)
        if meta.get("generator") != cls.name:
            raise WeightsError(f"{path} holds weights of {meta.get('generator')!r}, not {cls.name!r}")
        model = cls(**meta["config"])
        model.load_state_strict(tensors, str(path))
        model.metadata = meta
        return model

    @classmethod
    def official_weights_path(cls) -> Path:
        """Where the official checkpoint goes: its file, or the first of its accepted
        `alternatives` (another release's name) found beside it."""
        folder = weights_root() / cls.name
        names = [cls.official_checkpoint.get("file", f"{cls.name}.ckpt"),
                 *cls.official_checkpoint.get("alternatives", [])]
        return next((folder / name for name in names if (folder / name).exists()), folder / names[0])

    @classmethod
    def load(cls, weights: str, resolution: int) -> "Generator":
        """'shipped' (the project's small trained weights), 'official' (the official
        checkpoint under the weights folder), a .safetensors file, or a checkpoint path."""
        if weights == "official":
            return cls.load_official(cls.official_weights_path())
        if weights == "shipped":
            path = cls.shipped_weights_path(resolution)
            if not path.exists():
                raise WeightsError(f"no shipped {cls.name} weights for {resolution} px ({path}); "
                                   f"train them with `bench train-generator {cls.name}`")
            return cls.load_file(path)
        if str(weights).endswith(".safetensors"):
            return cls.load_file(weights)
        return cls.load_official(weights)

    def save(self, path: str | Path, meta: dict | None = None) -> None:
        save_tensors(path, self.state_dict(),
                     {"generator": self.name, "config": self.config, **(meta or {})})
