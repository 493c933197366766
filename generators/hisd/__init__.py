"""HiSD: the network and its edits (`model`); its training recipe (`recipe`), loaded only
to train or fine-tune it (`HiSD.recipe_module`); `python -m generators.hisd.references`
picks its reference faces."""

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

__all__ = ["CHECKED_ATTRIBUTE", "HAIR_COLOUR", "OFFICIAL_TAGS", "SHIPPED_REFERENCES", "DownBlock", "Extractors", "HiSD",
           "InstanceNorm", "LinearBlock", "Mapper", "MiddleBlock", "Translator", "UpBlock", "adain", "pick_references",
           "save_reference_strip"]
