"""HiSD: the network and its edits (`model`), its training recipe (`recipe`); `python -m
generators.hisd.references` picks its reference faces."""

from .model import (
    CHECKED_ATTRIBUTE,
    HAIR_COLOUR,
    OFFICIAL_TAGS,
    SHIPPED_REFERENCES,
    DownBlock,
    Extractors,
    HiSD,
    InstanceNorm,
    LinearBlock,
    Mapper,
    MiddleBlock,
    Translator,
    UpBlock,
    adain,
    pick_references,
    save_reference_strip,
)
from .recipe import (
    ATTRIBUTE_RULES,
    TAG_IRRELEVANT,
    Discriminator,
    HiSDBatch,
    HiSDRecipe,
    TagSamplers,
    faces_with,
    hisd_init,
    nearest_reference,
    preview_faces,
    save_reference_grid,
)

__all__ = ["ATTRIBUTE_RULES", "CHECKED_ATTRIBUTE", "HAIR_COLOUR", "OFFICIAL_TAGS", "SHIPPED_REFERENCES",
           "TAG_IRRELEVANT", "Discriminator", "DownBlock", "Extractors", "HiSD", "HiSDBatch", "HiSDRecipe",
           "InstanceNorm", "LinearBlock", "Mapper", "MiddleBlock", "TagSamplers", "Translator", "UpBlock", "adain",
           "faces_with", "hisd_init", "nearest_reference", "pick_references", "preview_faces", "save_reference_grid",
           "save_reference_strip"]
