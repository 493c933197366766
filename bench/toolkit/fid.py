"""FID and KID of a set of outputs against a set of references, on pytorch-fid's
Inception (bench/inception.py: pool3 features, 2048-d, its own resizing to 299).

- FID: the Fréchet distance of the Gaussians fitted to the two feature sets, in float64:
  |mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr(sqrt(S1 S2)), with the covariances as
  pytorch-fid (numpy) computes them. pytorch-fid takes the last trace from scipy's
  `sqrtm` of the 2048 x 2048 product (27 s a cell on this CPU, and inexact where the
  product is singular, as it is for fewer than 2,048 images); here it is the same
  quantity computed exactly: the sum of the singular values of the product of the
  centred feature matrices (X1 X2^T, images x images), or of S1^1/2 S2^1/2 for sets
  larger than the feature dimension. tests/test_fid.py checks it against pytorch-fid's
  own computation on the same images.
- KID: piq's unbiased polynomial-kernel MMD (degree 3, gamma 1/d, coef0 1) on the same
  features: the usual companion at small n, where FID is biased upward. Sets of up to
  1,000 images are compared whole (deterministic); larger ones by 100 subsets of 1,000
  drawn from a fixed seed, as KID is usually computed.

Features of a set are kept in memory for the few sets a run compares most often (the
clean outputs every cell of a generator is compared with), keyed by their pixels.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from bench.contract.errors import BenchError
from bench.contract.io import tensor_digest

KID_SUBSET_SIZE, KID_SUBSETS, KID_SEED = 1000, 100, 0
_MEMO: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
MEMO_SIZE = 8


def set_features(images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """(M, 3, H, W) in [-1, 1] -> (M, 2048) float64 Inception features, memoised."""
    from bench.toolkit.inception import pool_features

    key = (tensor_digest(images), str(device))
    if key not in _MEMO:
        _MEMO[key] = pool_features(images, device)
        while len(_MEMO) > MEMO_SIZE:
            _MEMO.popitem(last=False)
    _MEMO.move_to_end(key)
    return _MEMO[key]


def trace_sqrt_product(a: np.ndarray, b: np.ndarray) -> float:
    """Tr(sqrt(S_a S_b)) of the covariances of feature sets a (N1, D) and b (N2, D)."""
    ca, cb = a - a.mean(0), b - b.mean(0)
    scale = np.sqrt((len(a) - 1) * (len(b) - 1))
    if min(len(a), len(b)) <= a.shape[1]:  # the nonzero eigenvalues of S_a S_b are sigma(ca cb^T)^2 / scale^2
        return float(np.linalg.svd(ca @ cb.T, compute_uv=False).sum() / scale)
    root_a, root_b = symmetric_sqrt(np.cov(a, rowvar=False)), symmetric_sqrt(np.cov(b, rowvar=False))
    return float(np.linalg.svd(root_a @ root_b, compute_uv=False).sum())


def symmetric_sqrt(s: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(s)
    return (vectors * np.sqrt(values.clip(min=0))) @ vectors.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """FID of two feature sets (N, D), in float64."""
    if min(len(a), len(b)) < 2:
        raise BenchError("FID needs at least 2 images in each set")
    a, b = a.double().numpy(), b.double().numpy()
    diff = a.mean(0) - b.mean(0)
    traces = np.trace(np.cov(a, rowvar=False)) + np.trace(np.cov(b, rowvar=False))
    return float(diff @ diff + traces - 2 * trace_sqrt_product(a, b))


def kernel_inception_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """KID of two feature sets (N, D) with piq's unbiased estimator."""
    from piq import KID

    n = min(len(a), len(b))
    if n < 2:
        raise BenchError("KID needs at least 2 images in each set")
    whole = n <= KID_SUBSET_SIZE
    kid = KID(subset_size=n if whole else KID_SUBSET_SIZE, n_subsets=1 if whole else KID_SUBSETS,
              ret_var=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(KID_SEED)
        return float(kid.compute_metric(a.double(), b.double()))
