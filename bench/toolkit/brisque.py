"""BRISQUE (Mittal, Moorthy & Bovik, 2012) no-reference image quality, batched in torch.

Reproduces `cv2.quality.QualityBRISQUE_compute(img, model, range)` (opencv_contrib's
quality module) with OpenCV's LIVE model (`bench/weights/brisque/`, read here without
cv2), step by step as OpenCV computes it, float32 where OpenCV uses float32:

- grey: 8-bit BGR2GRAY in fixed point, (9798 R + 19235 G + 3735 B + 2^14) >> 15 (all
  2^24 colours checked against cv2 5.1), times float32(1/255) as `convertTo` does;
- two scales: the image, and an INTER_CUBIC resize (a = -0.75, edges replicated) to
  int(H/2) x int(W/2);
- MSCN: 7x7 Gaussian of sigma 7/6 with replicated borders, (x - mu) / (sqrt(blur(x^2) -
  mu^2) + 1/255); a variance that rounds below zero gives NaN, as in OpenCV, and NaNs
  and zeros count in neither the positive nor the negative sums;
- products with the right, lower, lower-right and upper-right neighbour, zero outside
  the image (OpenCV keeps the full size and counts those zeros in the total);
- AGGD fit: sums in float64; the shape is where OpenCV's walk over gamma = 0.2, 0.201,
  ... < 10 stops, found by binary search (r(gamma) is strictly increasing on the grid);
- 36 float32 features scaled to [-1, 1] with the range file, the epsilon-SVR (RBF) as
  OpenCV's ml module evaluates it, the score clamped to [0, 100].

The last bit matters: in flat patches (a saturated background) the MSCN value is 0, a
tiny number or NaN depending on how the blur and the resize round, and those pixels
move the AGGD fit. OpenCV's own score therefore depends on the CPU: it resizes floats
through IPP, and IPP's SSE4.2 and AVX2 / AVX-512 kernels round differently (on CelebA-HQ
faces its scores differ by up to 0.57 at 64 px and 1.3 at 256 px). This module copies
the rounding of OpenCV 5.1 on a modern x86 CPU: FMA in the blur's row pass (OpenCV's
AVX2 code) and the sums of IPP's AVX2 / AVX-512 resize, bit for bit for even sizes
except a few edge pixels. Against cv2 5.1 there it agrees within 0.016 (1,000 faces
at 64 px, mean under 0.001) and 0.008 (300 faces at 256 px); what is left comes from
those edge pixels, the order of the float64 sums and float32 exp. Odd sizes round like
IPP only to an ulp or two. Images without a negative (or a positive) MSCN value, such
as flat ones, have NaN features; OpenCV then scores 0 or 100 by accident of rounding
(0 for a uniform image), and so does this module. Needs float64, so not on MPS.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.toolkit.figures import to_unit

WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "brisque"
MODEL_FILES = (WEIGHTS / "brisque_model_live.yml", WEIGHTS / "brisque_range_live.yml")
IMPLEMENTATION = ("bench.toolkit.brisque: torch port of OpenCV 5.1 quality.QualityBRISQUE (opencv_contrib; x86 rounding: "
                  "FMA blur, IPP AVX2/AVX-512 cubic resize), OpenCV's LIVE epsilon-SVR "
                  "(brisque_model_live.yml, brisque_range_live.yml)")

_GREY_SHIFT = 15  # OpenCV's BGR2GRAY for 8-bit images: (9798 R + 19235 G + 3735 B + 2^14) >> 15
_GREY_RGB = (9798, 19235, 3735)
_GAUSS_SIZE, _GAUSS_SIGMA = 7, 7.0 / 6.0
_CUBIC_A = -0.75
_SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))  # (row, column) offsets: H, V, D1, D2
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


# ----------------------------------------------------------------------------- model


@dataclass(frozen=True)
class BrisqueModel:
    support_vectors: torch.Tensor  # (n_sv, 36) float32, as OpenCV stores them
    dual_coef: torch.Tensor  # (n_sv,) float64
    rho: float
    gamma: float
    feature_min: torch.Tensor  # (36,) float32
    feature_max: torch.Tensor  # (36,) float32


def _numbers(text: str) -> list[float]:
    return [float(t) for t in _NUMBER.findall(text)]


def _field(text: str, key: str) -> str:
    match = re.search(rf"^\s*{key}:\s*(\S+)\s*$", text, re.MULTILINE)
    if match is None:
        raise ValueError(f"no '{key}' in the OpenCV file")
    return match.group(1)


def read_opencv_svm(path: str | Path) -> dict:
    """An OpenCV ml SVM file (EPS_SVR, RBF, one decision function), parsed by hand so
    that cv2 (and OpenCV's YAML dialect: %YAML:1.0, !!opencv tags) needs no parser."""
    text = Path(path).read_text()
    if _field(text, "svmType") != "EPS_SVR" or _field(text, "type") != "RBF":
        raise ValueError(f"{path}: expected an EPS_SVR with an RBF kernel")
    n_sv, n_var = int(_field(text, "sv_total")), int(_field(text, "var_count"))
    head, _, tail = text.partition("decision_functions:")
    sv = _numbers(head.partition("support_vectors:")[2])
    alpha = _numbers(tail.partition("alpha:")[2].partition("]")[0])
    if len(sv) != n_sv * n_var or len(alpha) != n_sv or "index:" in tail:
        raise ValueError(f"{path}: support vectors or coefficients do not match sv_total={n_sv}")
    return {"support_vectors": torch.tensor(sv, dtype=torch.float32).reshape(n_sv, n_var),
            "dual_coef": torch.tensor(alpha, dtype=torch.float64),
            "rho": float(_field(text, "rho")), "gamma": float(_field(text, "gamma"))}


def read_opencv_matrix(path: str | Path, name: str = "range") -> torch.Tensor:
    """An `!!opencv-matrix` node of an OpenCV YAML file as a float32 tensor."""
    text = Path(path).read_text().partition(f"{name}:")[2]
    rows, cols = int(_field(text, "rows")), int(_field(text, "cols"))
    data = _numbers(text.partition("data:")[2].partition("]")[0])
    if len(data) != rows * cols:
        raise ValueError(f"{path}: {name} has {len(data)} values, not {rows} x {cols}")
    return torch.tensor(data, dtype=torch.float32).reshape(rows, cols)


@lru_cache(maxsize=None)
def load_model(model_path: str = str(MODEL_FILES[0]), range_path: str = str(MODEL_FILES[1])) -> BrisqueModel:
    svm = read_opencv_svm(model_path)
    ranges = read_opencv_matrix(range_path)
    if ranges.shape != (2, svm["support_vectors"].shape[1]):
        raise ValueError(f"{range_path}: range is {tuple(ranges.shape)}, not 2 x number of features")
    return BrisqueModel(feature_min=ranges[0], feature_max=ranges[1], **svm)


def model_sha256() -> str:
    """One SHA-256 over the model file's bytes, then the range file's."""
    digest = hashlib.sha256()
    for path in MODEL_FILES:
        digest.update(path.read_bytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------ grey image


def quantise(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> the 8-bit values an image file would hold (int32), rounded as
    the rest of the benchmark rounds (exact for images that came from 8 bits)."""
    return torch.round(to_unit(images.float()) * 255).to(torch.int32)


def grey(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [-1, 1] -> (N, H, W) float32 grey in [0, 1], OpenCV's rounding."""
    u8 = quantise(images)
    y = sum(w * u8[:, c] for c, w in enumerate(_GREY_RGB))
    y = (y + (1 << (_GREY_SHIFT - 1))) >> _GREY_SHIFT
    return y.to(torch.float32) * torch.tensor(1 / 255, dtype=torch.float32)  # convertTo multiplies


def _fma(a: torch.Tensor, b, c: torch.Tensor) -> torch.Tensor:
    # a * b + c rounded once to float32, like OpenCV's v_muladd on FMA hardware: the
    # product of two float32 values is exact in float64.
    return (a.double() * b + c.double()).float()


# ------------------------------------------------------------------------- filtering


@lru_cache(maxsize=None)
def _gauss_kernel() -> tuple[float, ...]:
    # getGaussianKernel: normalised in float64, stored as float32
    k = np.exp(-((np.arange(_GAUSS_SIZE) - _GAUSS_SIZE // 2) ** 2) / (2 * _GAUSS_SIGMA ** 2))
    return tuple(float(v) for v in (k / k.sum()).astype(np.float32))


def _taps(x: torch.Tensor, dim: int, radius: int) -> list[torch.Tensor]:
    """The 2 * radius + 1 shifted copies of x along dim (-1 or -2), edges replicated."""
    pad = (radius, radius, 0, 0) if dim == -1 else (0, 0, radius, radius)
    xp = F.pad(x.unsqueeze(1), pad, mode="replicate").squeeze(1)
    n = x.shape[dim]
    return [xp.narrow(dim, i, n) for i in range(2 * radius + 1)]


def gaussian_blur(x: torch.Tensor) -> torch.Tensor:
    """OpenCV's GaussianBlur(x, (7, 7), 7/6, BORDER_REPLICATE) on (N, H, W) float32:
    rows with a running fused multiply-add, then columns as a symmetric filter."""
    k = _gauss_kernel()
    r = _GAUSS_SIZE // 2
    t = _taps(x, -1, r)
    acc = t[0] * k[0]
    for i in range(1, _GAUSS_SIZE):
        acc = _fma(t[i], k[i], acc)
    t = _taps(acc, -2, r)
    acc = t[r] * k[r]
    for i in range(1, r + 1):
        acc = _fma(t[r - i] + t[r + i], k[r + i], acc)
    return acc


def _cubic_weights(f: float) -> list[float]:
    # Keys' cubic convolution weights (a = -0.75) at fraction f; the last makes the sum one
    a = _CUBIC_A
    w0 = ((a * (f + 1) - 5 * a) * (f + 1) + 8 * a) * (f + 1) - 4 * a
    w1 = ((a + 2) * f - (a + 3)) * f * f + 1
    w2 = ((a + 2) * (1 - f) - (a + 3)) * (1 - f) * (1 - f) + 1
    return [w0, w1, w2, 1 - w0 - w1 - w2]


@lru_cache(maxsize=None)
def _cubic_table(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """INTER_CUBIC along one axis (half-pixel centres): source indices (n_out, 4)
    clamped to the edge, float32 weights (n_out, 4), and which outputs had a tap
    clamped. Positions and weights in float64 then rounded, as IPP's match best (for a
    2x reduction the weights are exact either way)."""
    index, weight, edge = [], [], []
    for d in range(n_out):
        fx = (d + 0.5) * n_in / n_out - 0.5
        sx = math.floor(fx)
        taps = [sx + k - 1 for k in range(4)]
        index.append([min(max(t, 0), n_in - 1) for t in taps])
        weight.append(_cubic_weights(fx - sx))
        edge.append(taps[0] < 0 or taps[-1] > n_in - 1)
    return torch.tensor(index), torch.tensor(np.array(weight, dtype=np.float32)), torch.tensor(edge)


def _tail(edge: torch.Tensor) -> list[int]:
    # the two outputs just before the trailing edge ones, rounded differently by IPP
    inner = torch.nonzero(~edge).flatten().tolist()
    return inner[-2:]


# The four-tap sums of IPP's AVX2 / AVX-512 cubic resize kernels (t: taps, w: weights),
# which OpenCV's x86 builds call for float images; found against cv2.resize bit for bit.
def _h_inner(t, w):
    return (t[0] * w[0] + t[1] * w[1]) + (t[2] * w[2] + t[3] * w[3])


def _h_tail(t, w):
    return (t[0] * w[0] + t[2] * w[2]) + (t[1] * w[1] + t[3] * w[3])


def _h_edge(t, w):
    return _fma(t[3], w[3], _fma(t[2], w[2], _fma(t[0], w[0], t[1] * w[1])))


def _v_inner(t, w):
    return _fma(t[0], w[0], t[1] * w[1]) + _fma(t[2], w[2], t[3] * w[3])


def _v_tail(t, w):
    return _fma(t[1], w[1], t[0] * w[0]) + _fma(t[2], w[2], t[3] * w[3])


_v_edge = _h_tail


def _axis_taps(x: torch.Tensor, n_out: int, dim: int):
    index, weight, edge = (v.to(x.device) for v in _cubic_table(x.shape[dim], n_out))
    shape = (-1, 1) if dim == -2 else (-1,)
    taps = [x.index_select(dim, index[:, k]) for k in range(4)]
    return taps, [weight[:, k].reshape(shape) for k in range(4)], edge


def downscale(x: torch.Tensor) -> torch.Tensor:
    """cv::resize of (N, H, W) float32 to int(H/2) x int(W/2) with INTER_CUBIC, as
    OpenCV runs it on x86 (through IPP): rows first; outputs whose taps leave the image
    come from a separate edge path for both passes, and the last two inner columns from
    a tail path. Equal to cv2's bit for bit for even sizes but for a few edge pixels."""
    t, w, col_edge = _axis_taps(x, x.shape[-1] // 2, -1)
    tail = _tail(col_edge)
    rows = _h_inner(t, w)
    rows[..., tail] = _h_tail(t, w)[..., tail]
    rows_edge = _h_edge(t, w)
    rows[..., col_edge] = rows_edge[..., col_edge]
    t, w, row_edge = _axis_taps(rows, x.shape[-2] // 2, -2)
    out = _v_inner(t, w)
    out[..., tail] = _v_tail(t, w)[..., tail]
    t, w, _ = _axis_taps(rows_edge, x.shape[-2] // 2, -2)
    return torch.where(row_edge[:, None] | col_edge[None, :], _v_edge(t, w), out)


# -------------------------------------------------------------------------- features


def mscn(x: torch.Tensor) -> torch.Tensor:
    """Mean-subtracted contrast-normalised coefficients in float32, NaN where OpenCV's
    local variance comes out negative."""
    mu = gaussian_blur(x)
    var = gaussian_blur(x * x) - mu * mu
    sigma = torch.sqrt(var) + torch.tensor(1 / 255, dtype=torch.float32)
    return (x - mu) / sigma


def pair_products(m: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> (N, 4, H, W): m times its neighbour at each of _SHIFTS, 0 outside."""
    h, w = m.shape[-2:]
    out = []
    for dy, dx in _SHIFTS:
        shifted = torch.zeros_like(m)
        rows_dst, rows_src = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
        shifted[:, rows_dst, 0:w - dx] = m[:, rows_src, dx:w]
        out.append(m * shifted)
    return torch.stack(out, 1)


@lru_cache(maxsize=None)
def _gamma_grid() -> tuple[torch.Tensor, ...]:
    """OpenCV's gamma grid (0.2 + 0.001 k accumulated in float64 while < 10) with
    r(g) = G(2/g)^2 / (G(1/g) G(3/g)), G(2/g) / G(1/g) and sqrt(G(1/g)) / sqrt(G(3/g))."""
    grid, g = [], 0.2
    while g < 10:
        grid.append(g)
        g += 0.001
    ga = math.gamma
    r = [ga(2 / g) * ga(2 / g) / (ga(1 / g) * ga(3 / g)) for g in grid]
    ratio = [ga(2 / g) / ga(1 / g) for g in grid]
    const = [math.sqrt(ga(1 / g)) / math.sqrt(ga(3 / g)) for g in grid]
    return tuple(torch.tensor(v, dtype=torch.float64) for v in (grid, r, ratio, const))


def _gamma_index(rhat: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Index of the grid point where OpenCV's walk stops: the nearest r, the later one
    on a tie; the last one when r_hat is beyond the grid or NaN."""
    n = r.numel()
    idx = torch.searchsorted(r, rhat.contiguous())
    hi, lo = idx.clamp(max=n - 1), (idx - 1).clamp(min=0)
    pick = torch.where((r[hi] - rhat).abs() <= (r[lo] - rhat).abs(), hi, lo)
    pick = torch.where(idx == 0, torch.zeros_like(pick), pick)
    return torch.where((idx >= n) | rhat.isnan(), torch.full_like(pick, n - 1), pick)


def aggd_fit(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric generalised Gaussian fit over the last two dims, as OpenCV's AGGDfit:
    (grid index of gamma, gamma, left sigma, right sigma), float64. Zeros and NaNs count
    only in the total."""
    x = x.flatten(-2).double()
    pos, neg = x > 0, x < 0
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    sq = x * x
    pos_sq, neg_sq = torch.where(pos, sq, zero).sum(-1), torch.where(neg, sq, zero).sum(-1)
    abs_sum = torch.where(pos | neg, x.abs(), zero).sum(-1)
    left, right = torch.sqrt(neg_sq / neg.sum(-1)), torch.sqrt(pos_sq / pos.sum(-1))
    total = x.shape[-1]
    g = left / right
    rhat = (abs_sum / total) ** 2 / ((neg_sq + pos_sq) / total)
    rhat_norm = rhat * (g ** 3 + 1) * (g + 1) / (g ** 2 + 1) ** 2
    grid, r, _, _ = (t.to(x.device) for t in _gamma_grid())
    idx = _gamma_index(rhat_norm, r)
    return idx, grid[idx], left, right


def scale_features(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W) grey -> (N, 18) float32 features of one scale, in OpenCV's order."""
    m = mscn(x)
    _, gamma, left, right = aggd_fit(m)
    feats = [gamma, (left * left + right * right).float() / 2]
    idx, gamma, left, right = aggd_fit(pair_products(m))
    _, _, ratio, const = (t.to(x.device) for t in _gamma_grid())
    mean = (right - left) * ratio[idx] * const[idx]
    for k in range(len(_SHIFTS)):
        feats += [gamma[:, k], mean[:, k], left[:, k] * left[:, k], right[:, k] * right[:, k]]
    return torch.stack([f.float() for f in feats], 1)


def features(grey_images: torch.Tensor) -> torch.Tensor:
    """(N, H, W) float32 grey in [0, 1] -> (N, 36) float32 BRISQUE features."""
    return torch.cat([scale_features(grey_images), scale_features(downscale(grey_images))], 1)


# ------------------------------------------------------------------------------- SVR


_KERNEL_MAX = float(np.float32(np.finfo(np.float32).max * 1e-3))  # OpenCV's cap on kernel values


def _sequential_sum(kernel: torch.Tensor, model: BrisqueModel) -> float:
    # OpenCV's left-to-right float64 sum; its order matters when the terms are huge
    total = -model.rho
    for k, a in zip(kernel.tolist(), model.dual_coef.tolist()):
        total += k * a
    return total


def svr_score(feats: torch.Tensor, model: BrisqueModel) -> torch.Tensor:
    """OpenCV's range scaling (float32) and EPS_SVR prediction (RBF values in float32,
    sum in float64), rounded to float32 and clamped to [0, 100]. A NaN feature makes
    every kernel value NaN, which OpenCV caps at FLT_MAX / 1000: the sum is then a
    rounding accident, clamped to 0 or 100, reproduced here on the CPU."""
    device = feats.device
    lo, hi = model.feature_min.to(device), model.feature_max.to(device)
    scaled = -1 + 2 * (feats - lo) / (hi - lo)
    diff = (model.support_vectors.to(device) - scaled[:, None, :]).double()
    kernel = torch.exp(((diff * diff).sum(-1) * -model.gamma).float())
    capped = ~(kernel <= _KERNEL_MAX)
    kernel = torch.where(capped, torch.full_like(kernel, _KERNEL_MAX), kernel)
    score = kernel.double() @ model.dual_coef.to(device) - model.rho
    for i in torch.nonzero(capped.any(1)).flatten().tolist():
        score[i] = _sequential_sum(kernel[i].cpu(), model)
    return score.float().clamp(0, 100)


def brisque(images: torch.Tensor, device=None, batch_size: int = 64) -> torch.Tensor:
    """BRISQUE scores (N,) float64 on the CPU, lower is better, of (N, 3, H, W) RGB in
    [-1, 1], first quantised to 8 bits; computed on `device` (default: the images')."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (N, 3, H, W) images, got {tuple(images.shape)}")
    if min(images.shape[-2:]) < 8:
        raise ValueError(f"images of {tuple(images.shape[-2:])} are too small for BRISQUE (at least 8 x 8)")
    device = torch.device(device) if device is not None else images.device
    model = load_model()
    scores = [svr_score(features(grey(chunk.to(device))), model).double().cpu()
              for chunk in images.split(batch_size)]
    return torch.cat(scores) if scores else torch.zeros(0, dtype=torch.float64)
