from __future__ import annotations

import math

import pandas as pd

from analysis.labels import (fraction_label, ft_label, gain_label, is_missing, mean_std_label, model_label,
                             num_label, params_label)


def test_labels() -> None:
    assert model_label(50, 2.0, 0.0625) == "R50 2× SK" and model_label(18.0, 0.5, 0.0) == "R18 0.5×"
    assert model_label(None, math.nan) == "unknown model"
    assert fraction_label(0.01) == "1%" and fraction_label(1.0) == "100%" and fraction_label(None) == "—"
    assert params_label(23_500_000) == "23.5M" and params_label(1.2e9) == "1.2B" and params_label(950) == "950"
    assert num_label(3.0) == "3" and num_label(0.25) == "0.25" and num_label(True) == "yes"
    assert ft_label(-1) == "all" and ft_label(2.0) == "2"


def test_mean_std_and_gain() -> None:
    assert mean_std_label(71.234, 0.3, 3) == "71.23 ± 0.30 (3)"
    assert mean_std_label(71.0, math.nan, 1) == "71.00 (1)"
    assert mean_std_label(math.nan, math.nan, 0) == "—"
    assert gain_label(17.2) == "+17.20" and gain_label(-3.1) == "-3.10" and gain_label(None) == "—"


def test_is_missing() -> None:
    assert is_missing(None) and is_missing(math.nan) and is_missing(pd.NA)
    assert not is_missing(0) and not is_missing("x")
