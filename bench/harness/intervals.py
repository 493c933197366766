"""95% bootstrap confidence intervals over evaluation images.

A cell's pair metrics (L2, SSIM, DSR) are means over its pairs (image, edit target).
The pairs of one image are not independent (one perturbation, one face), so the unit
resampled is the image: each row keeps its value per image (the mean over the image's
targets) and a resample draws N of the N images with replacement.

Every row over the same N images is resampled with the same draws (`draws(n)`: a fixed
seed), so a statistic of several cells, such as the mean or the worst case over the
defenses or the difference of two entries, is bootstrapped jointly: its replicates
are the statistic of the cells' replicates. The interval is the percentile interval
(2.5% and 97.5% of 2,000 replicates).
"""

from __future__ import annotations

import functools

import numpy as np

RESAMPLES, SEED, LEVEL = 2000, 0, 0.95


@functools.lru_cache(maxsize=16)
def draws(n: int) -> np.ndarray:
    """(RESAMPLES, n) image indices, the same for every call with the same n."""
    return np.random.default_rng(SEED).integers(0, n, size=(RESAMPLES, n))


def replicates(per_image) -> np.ndarray | None:
    """(RESAMPLES,) means of the resampled per-image values; None without them."""
    if per_image is None or (isinstance(per_image, float) and np.isnan(per_image)) or len(per_image) == 0:
        return None
    values = np.asarray(per_image, dtype=np.float64)
    return values[draws(len(values))].mean(axis=1)


def interval(reps: np.ndarray | None) -> tuple[float, float]:
    """The percentile interval of replicates; (nan, nan) without them."""
    if reps is None:
        return float("nan"), float("nan")
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(reps, [tail, 100 - tail])
    return float(low), float(high)


def combined(replicate_sets: list[np.ndarray | None], statistic) -> np.ndarray | None:
    """Replicates of `statistic` (e.g. np.mean, np.max over axis 0) of several cells'
    replicates; None where any cell lacks them."""
    if not replicate_sets or any(r is None for r in replicate_sets):
        return None
    return statistic(np.stack(replicate_sets), axis=0)


def separable(a: np.ndarray | None, b: np.ndarray | None) -> bool | None:
    """Whether the 95% interval of the paired difference a - b excludes 0 (None: no
    replicates to tell)."""
    if a is None or b is None:
        return None
    low, high = interval(a - b)
    return low > 0 or high < 0


def plus_minus(low: float, high: float, digits: int = 3) -> str:
    """' ± h': half the width of an interval, as tables print it."""
    return f" ± {(high - low) / 2:.{digits}f}"


def note(images: list[int]) -> str:
    """What the intervals are, for the notes under a table."""
    counts = ", ".join(str(n) for n in sorted(set(images))) or "?"
    return (f"±: half the width of the {LEVEL:.0%} bootstrap interval over the {counts} evaluation images of "
            f"each cell ({RESAMPLES:,} resamples of whole images, seed {SEED}; the CSV holds both ends).")
