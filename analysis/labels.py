"""How numbers and config points read in tables, plots and the summary.

One place for it so the Markdown, LaTeX, HTML and plot legends say the same thing. Models read like
the SimCLRv2 paper's Table 1 ("ResNet-152 (3×+SK)"), shortened: ``R152 3× SK``.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["is_missing", "model_label", "fraction_label", "params_label", "mean_std_label", "gain_label",
           "num_label", "head_label", "ft_label", "memory_label"]


def is_missing(x: Any) -> bool:
    """None, NaN or pandas' NA."""
    if x is None:
        return True
    try:
        return bool(x != x)  # NaN and pd.NA (pd.NA != pd.NA is NA: bool() raises -> missing)
    except TypeError:
        return True


def num_label(x: Any, digits: int = 0) -> str:
    """An axis value: ``18``, ``0.5``; ``—`` when missing."""
    if is_missing(x):
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    xf = float(x)
    if digits == 0 and xf.is_integer():
        return str(int(xf))
    return f"{xf:g}" if digits == 0 else f"{xf:.{digits}f}"


def model_label(depth: Any, width: Any, sk_ratio: Any = 0.0) -> str:
    """``R50 2× SK``: depth, width multiplier, and SK when selective kernels are on (sk_ratio > 0)."""
    if is_missing(depth) and is_missing(width):
        return "unknown model"
    sk = "" if is_missing(sk_ratio) or float(sk_ratio) == 0 else " SK"
    return f"R{num_label(depth)} {num_label(width)}×{sk}"


def head_label(num_proj_layers: Any, ft_proj_selector: Any = None) -> str:
    """``head 3, ft 1``: projection-head layers and the head layer fine-tuning starts from."""
    parts = []
    if not is_missing(num_proj_layers):
        parts.append(f"head {num_label(num_proj_layers)}")
    if not is_missing(ft_proj_selector):
        parts.append(f"ft {ft_label(ft_proj_selector)}")
    return ", ".join(parts)


def ft_label(ft_proj_selector: Any) -> str:
    """The head layer fine-tuning starts from: ``0`` (encoder), ``1``, ... or ``all`` (-1 in the config)."""
    if not is_missing(ft_proj_selector) and float(ft_proj_selector) == -1:
        return "all"
    return num_label(ft_proj_selector)


def memory_label(memory_size: Any) -> str:
    """SimCLRv2's memory (queued negatives of pretraining): ``memory 65,536``, ``no memory`` (0), ``memory —``."""
    if is_missing(memory_size):
        return "memory —"
    return "no memory" if float(memory_size) == 0 else f"memory {int(float(memory_size)):,}"


def fraction_label(fraction: Any) -> str:
    """Label fraction as a percentage: 0.01 -> ``1%``, 0.1 -> ``10%``, 1.0 -> ``100%``."""
    if is_missing(fraction):
        return "—"
    return f"{float(fraction) * 100:g}%"


def params_label(params: Any) -> str:
    """Parameter count: ``0.7M``, ``23.5M``, ``1.2B``."""
    if is_missing(params):
        return "—"
    p = float(params)
    if p >= 1e9:
        return f"{p / 1e9:.1f}B"
    if p >= 1e6:
        return f"{p / 1e6:.1f}M"
    if p >= 1e3:
        return f"{p / 1e3:.1f}K"
    return f"{p:.0f}"


def mean_std_label(mean: Any, std: Any, n: Any, digits: int = 2) -> str:
    """``71.20 ± 0.30 (3)``: mean ± sample std (seeds); no ± with one seed; ``—`` without any."""
    if is_missing(mean) or is_missing(n) or int(n) == 0:
        return "—"
    if int(n) == 1 or is_missing(std):
        return f"{float(mean):.{digits}f} (1)"
    return f"{float(mean):.{digits}f} ± {float(std):.{digits}f} ({int(n)})"


def gain_label(gain: Any, digits: int = 2) -> str:
    """A signed difference: ``+17.20`` / ``-3.10``; ``—`` when missing."""
    if is_missing(gain) or math.isinf(float(gain)):
        return "—"
    return f"{float(gain):+.{digits}f}"
