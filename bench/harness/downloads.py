"""What `bench download` checks: every file the paper profile reads, where it goes, and
whether the file there is the released one, by size and SHA-256 against what its source
publishes (a Git LFS pointer's size and hash, the hash in a download URL, or the prefix
in a torch hub file name):

    verified    the released file (or, where a source publishes a prefix, one with it)
    different   present, but not the released file: results will not be comparable
    unverified  present under an accepted name whose release publishes no hash
    missing     not there

A run whose generators load their official checkpoints (the paper profile) refuses one
that is not verified unless `allow_unverified_weights` is set; run.json records each
checkpoint's state. A file is hashed once per process (by path, size and time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.contract.errors import WeightsError
from bench.contract.io import file_sha256_once
from bench.contract.plugins import weights_root
from bench.contract.registry import registry

VERIFIED, DIFFERENT, UNVERIFIED, MISSING = "verified", "different", "unverified", "missing"

# the official ComDefend files as committed to jiaxiaojunQAQ/Comdefend (checkpoints/, 91273ed):
# their sizes, and the SHA-256 of those git blobs
COMDEFEND = {"enc20_0.0001.npy": (3_506_620, "14ad4726c517982d2c74b809bf1fd623f8abbe887d15e8b24f3a5dee2bb504d5"),
             "dec20_0.0001.npy": (3_503_795, "d2df77581e5913c126a30c943acb29bbada6beb942a189652c4f726d7a98ecf7")}
# Salesforce/blip-image-captioning-base's pytorch_model.bin (its Hugging Face LFS hash)
BLIP_SHA256 = "d6638651a5526cc2ede56f2b5104d6851b0755816d220e5e046870430180c767"


@dataclass(frozen=True)
class Expected:
    """A file a run reads: where it goes, where to get it, and what its release is."""
    name: str
    path: Path
    source: str
    sha256: str | None = None  # the released file's, or the prefix its source publishes
    bytes: int | None = None
    others: dict = field(default_factory=dict)  # sha256 -> which other release a file with it is


@dataclass(frozen=True)
class Finding:
    state: str
    detail: str
    sha256: str | None = None


def check(expected: Expected) -> Finding:
    """Whether the file at `expected.path` is the released one."""
    path = expected.path
    if not path.is_file():
        return Finding(MISSING, f"not found at {path}")
    size = path.stat().st_size
    if expected.sha256 is None:
        return Finding(UNVERIFIED, f"{path} ({size:,} bytes): its release publishes no hash to check it by")
    digest = file_sha256_once(path)
    if digest.startswith(expected.sha256) and expected.bytes in (None, size):
        return Finding(VERIFIED, f"{path} ({size:,} bytes, sha256 {digest[:16]}...)", digest)
    which = expected.others.get(digest, "a file of unknown origin")
    wanted = f"sha256 {expected.sha256[:16]}..." + (f", {expected.bytes:,} bytes" if expected.bytes else "")
    return Finding(DIFFERENT, f"{path}: expected {wanted}; found sha256 {digest[:16]}..., {size:,} bytes "
                              f"({which}): results will not be comparable with the paper's", digest)


def generator_checkpoint(name: str) -> Expected:
    cls = registry("generators").get(name)
    facts = cls.official_checkpoint
    path = cls.official_weights_path()
    alternative = path.name in facts.get("alternatives", [])  # another release's name: no known hash
    names = " or ".join([path.name if not alternative else facts.get("file", path.name),
                         *facts.get("alternatives", [])])
    return Expected(name, path, f"{facts.get('source')} ({names})", None if alternative else facts.get("sha256"),
                    None if alternative else facts.get("bytes"), facts.get("others", {}))


def other_files() -> list[Expected]:
    """What runs read besides the generators: the metrics' networks (FID/KID's Inception,
    the CLIP score's ViT-B-32, the identity metrics' FaceNet), ComDefend's official weights
    (`bypasses.comdefend.weights=official`) and MMFA's feature networks."""
    from bench.toolkit import clip_score, facenet, inception
    from bench.toolkit.features import BLIP_FOLDER, resnet50_weights_path

    fid = inception.weights_file() or inception.expected_place()
    clip = clip_score.weights_path()
    resnet = resnet50_weights_path()
    blip = weights_root() / BLIP_FOLDER / "pytorch_model.bin"
    if not blip.exists() and blip.with_name("model.safetensors").exists():  # a conversion: no published hash
        blip = blip.with_name("model.safetensors")
    comdefend = [Expected(f"comdefend {file}", weights_root() / "comdefend" / file,
                          f"jiaxiaojunQAQ/Comdefend checkpoints/{file}", sha, size)
                 for file, (size, sha) in COMDEFEND.items()]
    return [
        Expected("inception (FID, KID)", fid, inception.HOW_TO_GET,
                 inception.PTH_SHA256_PREFIX if fid.suffix == ".pth" else inception.HELPER_SHA256),
        Expected("clip (CLIP score)", clip,
                 "OpenAI's CLIP ViT-B/32 in open_clip's layout (open_clip_model.safetensors of "
                 "timm/vit_base_patch32_clip_224.openai, saved here as ViT-B-32-openai.safetensors) or OpenAI's own "
                 "ViT-B-32.pt (its hash is in its URL); without it runs report classifier_cosine in its place",
                 clip_score.OPENAI_PT_SHA256 if clip.name == "ViT-B-32.pt" else None),
        Expected("facenet (identity metrics)", facenet.weights_file() or facenet.expected_place(), facenet.HOW_TO_GET,
                 facenet.GRAPH_SHA256),
        *comdefend,
        Expected("resnet50 (MMFA image features)", resnet,
                 "torchvision ResNet50_Weights.IMAGENET1K_V1 (torch's hub cache works too)",
                 resnet.stem.rsplit("-", 1)[-1]),
        Expected("blip (MMFA semantic features)", blip,
                 f"a local copy (config.json + pytorch_model.bin) of Salesforce/blip-image-captioning-base in "
                 f"{blip.parent}", BLIP_SHA256 if blip.name == "pytorch_model.bin" else None),
    ]


def verified_checkpoint(config: dict, name: str) -> dict | None:
    """The check of generator `name`'s official checkpoint, where the configuration loads
    it (None otherwise, or where it is missing: loading it says where it goes); one that
    is not verified ends the run unless `allow_unverified_weights`. An explicit checkpoint
    path (`generators.NAME.weights=PATH`) is the user's own file: not checked."""
    if config["generators"].get(name, {}).get("weights") != "official":
        return None
    expected = generator_checkpoint(name)
    finding = check(expected)
    if finding.state == MISSING:
        return None
    if finding.state != VERIFIED and not config.get("allow_unverified_weights"):
        raise WeightsError(f"official {name} checkpoint {finding.state}: {finding.detail}; a run uses verified "
                           "official checkpoints only (--set allow_unverified_weights=true runs it anyway, "
                           "recorded in run.json)")
    return {"path": str(expected.path), "state": finding.state, "sha256": finding.sha256}
