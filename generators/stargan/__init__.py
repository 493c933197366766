"""StarGAN: the network and its edits (`model`), its training recipe (`recipe`)."""

from .model import ATTRIBUTES, HAIR_COLOURS, InstanceNormInputStats, ResidualBlock, StarGAN
from .recipe import Discriminator, StarGANBatch, StarGANRecipe

__all__ = ["ATTRIBUTES", "HAIR_COLOURS", "Discriminator", "InstanceNormInputStats", "ResidualBlock", "StarGAN",
           "StarGANBatch", "StarGANRecipe"]
