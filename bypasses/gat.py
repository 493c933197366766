"""GAT: adversarial training of the whole generator and its critic (Ruiz et al.,
"Disrupting deepfakes", arXiv 2003.01279; public code natanielruiz/disrupting-deepfakes).

The public code (stargan/solver.py `train_adv_both`, the variant its main.py runs) is
StarGAN's own training loop with adversarial inputs: every iteration, L-inf PGD (eps
0.05, 10 steps of 0.01, uniform random start) against a frozen copy of the current
generator perturbs the real batch, maximising the MSE of the output for the random
target labels to an all-black image; the critic takes the perturbed images as real and
their translations, perturbed once more, as fake (gradient penalty between the two);
every n_critic-th iteration the generator translates the perturbed images and
reconstructs the clean ones from its perturbed translations. The losses and settings
are StarGAN's (WGAN-GP, classification 1, reconstruction 10, gradient penalty 10, Adam
1e-4, betas 0.5/0.999, n_critic 5, 200k iterations).

This re-implementation, for any generator with a recipe (`Generator.recipe`: StarGAN's,
AttGAN's and HiSD's own training recipes):
- the recipe's losses and critic/generator schedule unchanged, with adversarial
  examples as the real inputs of the generator and of the critic, and the clean images
  as what the reconstructions reproduce;
- the schedule of LoRA patching (bench.toolkit.finetune.FinetuneLoop): a seeded shuffle of the
  fine-tuning images in batches, one recipe iteration per batch and edit target;
  each iteration makes its adversarial examples with the shared PGD
  (`adversarial_example`: eps 0.05, 10 steps of 0.01, random start seeded by
  `step_seed`) against the current generator for that edit target (its weights do
  not change during the PGD, as with the public code's frozen copy);
- targets are the benchmark's edit targets (the edits the defenses disrupt), not the
  recipe's random label permutation; the recipe's unedited labels are recovered from
  them (`Recipe.unedited`);
- the PGD maximises the distance to the current generator's output on the clean image
  (the Disrupting objective, `pgd_reference=current`); `black` is the public code's
  all-black target;
- named deviation: only the real images are perturbed, not the translations that the
  reconstruction and the critic take (defenses perturb only source images, and it
  would double or triple the PGD cost);
- the shipped generators come without their critics: a fresh critic sized by the
  recipe is first trained alone for `d_warmup` updates against the frozen generator on
  the clean fine-tuning images (`d_warmup`, a named option; default 500);
- lr / betas None use the recipe's (StarGAN 1e-4, 0.5/0.999; AttGAN 2e-4, 0.5/0.999;
  HiSD 2e-4, 0/0.99) for generator and critic; no learning-rate decay (the recipes'
  decay belongs to their schedules from scratch). `recipe_settings` overrides the
  recipe's own (its TrainParams fields: e.g. {"n_critic": 1} for StarGAN, {"n_d": 1}
  for AttGAN, loss weights);
- epochs 20: Table III gives GAT 5.245 h against LoRA patching's 0.251 h for its one
  epoch over the same images, and a step costs about the same in both (the PGD
  dominates; measured on the quick StarGAN at 64 px: a GAT iteration 0.7 times a
  rank-8 LoRA step), hence about 20 passes (an inference: the paper states no schedule);
- HiSD's recipe draws batches by label, which the fine-tuning images lack: each image's
  own hair colour is the reference whose style code is nearest to its own, its
  tag-irrelevant conditions (Male, Young) are 0 (unknown); no moving average;
- `trainable_params` is the generator's parameter count (Table III: 8.431 M for
  StarGAN), the critic's is `critic_params` in the fit's info; `loss_curve` holds the
  generator objective of each generator update, `critic_curve` the critic's of each
  critic update (warm-up first), `steps` the recipe iterations, `train_seconds` the
  warm-up and the adversarial loop.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal

import torch

from bench.contract.params import AdamBeta, Count, NonNegativeInt, Positive
from bench.toolkit.finetune import (
    AdversarialFinetuneSettings,
    FinetuneLoop,
    adversarial_example,
    count_trainable,
    step_seed,
)
from bypasses.whole_generator import WholeGeneratorPatch

PGD_REFERENCES = ("current", "black")


class GAT(WholeGeneratorPatch):
    name = "gat"
    version = "1"
    paper = "Ruiz et al., Disrupting deepfakes (GAT), arXiv 2003.01279"
    smoke_params = {"epochs": 1, "batch_size": 2, "pgd_steps": 2, "d_warmup": 2}

    @dataclass
    class Params(AdversarialFinetuneSettings):
        epochs: Count = 20
        lr: Positive | None = None  # None: the recipe's
        beta1: AdamBeta | None = None
        beta2: AdamBeta | None = None
        d_warmup: NonNegativeInt = 500
        pgd_reference: Literal[PGD_REFERENCES] = "current"
        recipe_settings: dict = field(default_factory=dict)

    def fit(self, generator, images, conditions, seed, device):
        p = self.params
        started = time.time()  # the critic's warm-up counts as training time
        recipe = generator.recipe(images.size(-1), **p.recipe_settings)
        torch.manual_seed(seed)  # the critic's initialisation and the recipe's random draws
        G = self.trainable_copy(generator, device)
        D = recipe.discriminator().to(device)
        g_opt, d_opt = recipe.optimisers(G, D)
        self._apply_optimiser_settings(g_opt, d_opt)
        # each target rides with the image's unedited condition through the shuffled loop
        paired = torch.stack([conditions, recipe.unedited(conditions).expand_as(conditions)], -1)
        critic_curve = self._warm_up(recipe, G, D, d_opt, images, paired, seed, device)
        loop = FinetuneLoop(images, paired, p.batch_size, p.epochs, seed, device, "gat")
        for step, x, pair in loop:
            c_trg, c_org = pair.unbind(-1)
            x_adv = adversarial_example(G, x, c_trg, self._pgd_reference(G, x, c_trg), p, step_seed(seed, step))
            logs = recipe.train_iteration(step, G, D, g_opt, d_opt, recipe.batch(G, x, x_adv, c_org, c_trg))
            if "D/loss" in logs:
                critic_curve.append(logs["D/loss"])
            if "G/loss" in logs:
                loop.record(logs["G/loss"])
        group = g_opt.param_groups[0]
        return self.keep(G), loop.info(
            count_trainable(G), train_seconds=time.time() - started, steps=loop.total_steps,
            generator_updates=len(loop.losses), critic_params=count_trainable(D), critic_curve=critic_curve,
            d_warmup=p.d_warmup, lr=group["lr"], betas=list(group["betas"]))

    def _apply_optimiser_settings(self, *optimisers) -> None:
        """lr and betas given in the params replace the recipe's, in every parameter group."""
        p = self.params
        for opt in optimisers:
            for group in opt.param_groups:
                if p.lr is not None:
                    group["lr"] = p.lr
                beta1, beta2 = group["betas"]
                group["betas"] = (beta1 if p.beta1 is None else p.beta1, beta2 if p.beta2 is None else p.beta2)

    def _warm_up(self, recipe, G, D, d_opt, images, paired, seed, device) -> list[float]:
        """`d_warmup` critic updates against the frozen generator on the clean images."""
        p = self.params
        steps_per_epoch = math.ceil(images.size(0) / p.batch_size) * paired.size(0)
        loop = FinetuneLoop(images, paired, p.batch_size, math.ceil(p.d_warmup / steps_per_epoch), seed, device,
                            "gat critic warm-up")
        curve = []
        for step, x, pair in loop:
            if step == p.d_warmup:
                break
            c_trg, c_org = pair.unbind(-1)
            curve.append(recipe.train_discriminator(G, D, d_opt, recipe.batch(G, x, x, c_org, c_trg))["D/loss"])
        return curve

    def _pgd_reference(self, G, x, c) -> torch.Tensor:
        if self.params.pgd_reference == "black":
            return torch.zeros_like(x)
        with torch.no_grad():
            return G(x, c)
