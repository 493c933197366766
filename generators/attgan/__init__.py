"""AttGAN: the network and its edits (`model`), its training recipe (`recipe`)."""

from .model import ATTRIBUTES, CONFLICTS, EDITED, HAIR_COLOURS, AttGAN, Block
from .recipe import AttGANBatch, AttGANRecipe, Discriminators

__all__ = ["ATTRIBUTES", "CONFLICTS", "EDITED", "HAIR_COLOURS", "AttGAN", "AttGANBatch", "AttGANRecipe", "Block",
           "Discriminators"]
