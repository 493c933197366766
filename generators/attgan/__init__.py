"""AttGAN: the network and its edits (`model`); its training recipe (`recipe`), loaded
only to train or fine-tune it (`AttGAN.recipe_module`)."""

from .model import ATTRIBUTES, CONFLICTS, EDITED, HAIR_COLOURS, AttGAN, Block

__all__ = ["ATTRIBUTES", "CONFLICTS", "EDITED", "HAIR_COLOURS", "AttGAN", "Block"]
