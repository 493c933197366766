"""What GAT and MaGAT share: both fine-tune every parameter of the generator, so a fit's
tensors are the generator's whole state and the patch is a copy of the generator
carrying it.

The copy trains in eval mode: norm layers with running statistics (the official AttGAN's
BatchNorm) keep the statistics the generator is used with; the project's StarGAN and
HiSD norms, and the quick AttGAN's, use each image's own statistics in either mode.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from bench.contract.errors import ConfigError
from bench.contract.plugins import Bypass


class WholeGeneratorPatch(Bypass):
    """A bypass whose fit retrains the whole generator (subclasses implement `fit`)."""

    kind = "patch"
    trainable = True

    def __init__(self, **params):
        super().__init__(**params)
        self.state: dict[str, torch.Tensor] | None = None

    @staticmethod
    def trainable_copy(generator: nn.Module, device: torch.device) -> nn.Module:
        """A copy of `generator` on `device` with every parameter trainable (the original
        is untouched)."""
        return copy.deepcopy(generator).to(device).eval().requires_grad_(True)

    def keep(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Hold the fine-tuned generator's full state (on the CPU) as the fitted tensors."""
        self.state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return self.state

    def load_state(self, state, info):
        self.state = state

    def patch(self, generator):
        """A copy of `generator` carrying the fine-tuned (or loaded) weights."""
        if self.state is None:
            raise ConfigError(f"{self.name} has not been fitted or loaded")
        patched = copy.deepcopy(generator)
        own = patched.state_dict()
        mismatched = sorted(k for k in own.keys() | self.state.keys()
                            if k not in own or k not in self.state or own[k].shape != self.state[k].shape)
        if mismatched:
            raise ConfigError(f"the {self.name} weights do not fit this {generator.name} generator: "
                              f"{len(mismatched)} mismatching tensors, e.g. {mismatched[0]}")
        patched.load_state_dict(self.state)
        return patched.eval().requires_grad_(False)
