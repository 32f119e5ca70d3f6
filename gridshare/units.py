"""The one place that converts between physical floats and on-chain integers.

On-chain scales (the contracts state the same in their NatSpec):

=====================  ==========================  =====================================
quantity               on-chain unit               Python helpers
=====================  ==========================  =====================================
active power           W (int)                     ``kw_to_w`` / ``w_to_kw``
reactive power         var (int)                   ``kvar_to_var`` / ``var_to_kvar``
energy                 Wh (int)                    ``kwh_to_wh`` / ``wh_to_kwh``
voltage magnitude      micro-pu, 1e-6 pu (uint)    ``pu_to_micro_pu`` / ``micro_pu_to_pu``
voltage angle          micro-rad, 1e-6 rad (int)   ``rad_to_micro_rad`` / ``micro_rad_to_rad``
price                  micro-euro per kWh (uint)   ``eur_per_kwh_to_price`` /
                                                   ``price_to_eur_per_kwh``
money (balances)       nano-euro, 1e-9 EUR (int)   ``payment_nano_eur``, ``nano_eur_to_eur``
=====================  ==========================  =====================================

A micro-euro per kWh equals a nano-euro per Wh, so a payment is exactly
``energy_wh * price_micro_eur_per_kwh`` nano-euro: integer arithmetic with no rounding, on-chain
and off-chain alike. One euro-cent is 10**7 nano-euro.
"""

from __future__ import annotations

import numpy as np

MICRO = 1_000_000
NANO_EUR_PER_EUR = 1_000_000_000
NANO_EUR_PER_EURO_CENT = 10_000_000


def _to_int(value: float | np.ndarray, scale: float) -> int | np.ndarray:
    """Round ``value * scale`` half away from zero to int (scalar) or int64 (array)."""
    scaled = np.asarray(value, dtype=float) * scale
    if not np.all(np.isfinite(scaled)):
        raise ValueError(f"cannot put a non-finite value on-chain: {value!r}")
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    if rounded.ndim == 0:
        return int(rounded)
    return rounded.astype(np.int64)


def _to_float(value: int | np.ndarray, scale: float) -> float | np.ndarray:
    out = np.asarray(value, dtype=float) / scale
    return float(out) if out.ndim == 0 else out


def kw_to_w(p_kw: float | np.ndarray) -> int | np.ndarray:
    """kW (float) -> W (int)."""
    return _to_int(p_kw, 1e3)


def w_to_kw(p_w: int | np.ndarray) -> float | np.ndarray:
    """W (int) -> kW (float)."""
    return _to_float(p_w, 1e3)


kvar_to_var = kw_to_w
var_to_kvar = w_to_kw
kwh_to_wh = kw_to_w
wh_to_kwh = w_to_kw


def pu_to_micro_pu(v_pu: float | np.ndarray) -> int | np.ndarray:
    """Voltage magnitude pu (float) -> micro-pu (int)."""
    return _to_int(v_pu, MICRO)


def micro_pu_to_pu(v_micro_pu: int | np.ndarray) -> float | np.ndarray:
    """Voltage magnitude micro-pu (int) -> pu (float)."""
    return _to_float(v_micro_pu, MICRO)


def mw_to_kw(p_mw: float | np.ndarray) -> float | np.ndarray:
    """MW or MVA (pandapower's unit, float) -> kW or kVA (float)."""
    out = np.asarray(p_mw, dtype=float) * 1e3
    return float(out) if out.ndim == 0 else out


def ppm_to_fraction(value_ppm: int | np.ndarray) -> float | np.ndarray:
    """Parts per million (int, e.g. an efficiency on-chain) -> fraction (float)."""
    return _to_float(value_ppm, MICRO)


def pu_to_nano_pu(value_pu: float) -> int:
    """pu (float) -> nano-pu (int, Python's round): the scale of OCM margins and NR tolerances
    in the oracle's hashed inputs."""
    return round(value_pu * 1e9)


def nano_pu_to_pu(value_nano_pu: int) -> float:
    """nano-pu (int) -> pu (float)."""
    return float(value_nano_pu) * 1e-9


def pct_to_milli_pct(value_pct: float) -> int:
    """Percent (float) -> thousandths of a percent (int, Python's round): loading limits and
    tolerances in the oracle's hashed inputs."""
    return round(value_pct * 1000)


def milli_pct_to_pct(value_milli_pct: int) -> float:
    """Thousandths of a percent (int) -> percent (float)."""
    return float(value_milli_pct) / 1000.0


rad_to_micro_rad = pu_to_micro_pu
micro_rad_to_rad = micro_pu_to_pu


def eur_per_kwh_to_price(price_eur_per_kwh: float | np.ndarray) -> int | np.ndarray:
    """EUR/kWh (float) -> on-chain price in micro-euro per kWh (int)."""
    return _to_int(price_eur_per_kwh, MICRO)


def price_to_eur_per_kwh(price_micro_eur_per_kwh: int | np.ndarray) -> float | np.ndarray:
    """On-chain price in micro-euro per kWh (int) -> EUR/kWh (float)."""
    return _to_float(price_micro_eur_per_kwh, MICRO)


def payment_nano_eur(energy_wh: int, price_micro_eur_per_kwh: int) -> int:
    """Exact payment in nano-euro for ``energy_wh`` at ``price_micro_eur_per_kwh``."""
    return int(energy_wh) * int(price_micro_eur_per_kwh)


def nano_eur_to_eur(amount_nano_eur: int | np.ndarray) -> float | np.ndarray:
    """nano-euro (int) -> EUR (float)."""
    return _to_float(amount_nano_eur, NANO_EUR_PER_EUR)
