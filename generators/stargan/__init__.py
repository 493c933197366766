"""StarGAN: the network and its edits (`model`); its training recipe (`recipe`), loaded
only to train or fine-tune it (`StarGAN.recipe_module`)."""

from .model import ATTRIBUTES, HAIR_COLOURS, InstanceNormInputStats, ResidualBlock, StarGAN

__all__ = ["ATTRIBUTES", "HAIR_COLOURS", "InstanceNormInputStats", "ResidualBlock", "StarGAN"]
