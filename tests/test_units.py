"""The on-chain unit scales of gridshare/units.py."""

import numpy as np
import pytest

from gridshare import units


def test_power_round_trip_and_rounding_half_away_from_zero() -> None:
    assert units.kw_to_w(1.2345) == 1235  # 1234.5 W rounds half away from zero
    assert units.kw_to_w(-1.2345) == -1235
    assert units.kw_to_w(0.0004) == 0
    assert units.w_to_kw(22_000) == pytest.approx(22.0)
    arr = units.kw_to_w(np.array([0.5, -0.5, 22.0]))
    assert arr.dtype == np.int64
    assert arr.tolist() == [500, -500, 22_000]


def test_voltage_and_angle_scales_are_micro_units() -> None:
    assert units.pu_to_micro_pu(1.0123456) == 1_012_346
    assert units.micro_pu_to_pu(950_000) == pytest.approx(0.95)
    assert units.rad_to_micro_rad(-0.0000015) == -2


def test_price_and_payment_are_exact_integers() -> None:
    price = units.eur_per_kwh_to_price(0.25)
    assert price == 250_000
    # 1 kWh at 0.25 EUR/kWh is 0.25 EUR = 250_000_000 nano-euro
    assert units.payment_nano_eur(1000, price) == 250_000_000
    assert units.nano_eur_to_eur(units.payment_nano_eur(1000, price)) == pytest.approx(0.25)
    assert units.NANO_EUR_PER_EURO_CENT * 100 == units.NANO_EUR_PER_EUR


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="non-finite"):
        units.kw_to_w(bad)
    with pytest.raises(ValueError, match="non-finite"):
        units.eur_per_kwh_to_price(np.array([0.1, bad]))


def test_pandapower_megawatts_and_parts_per_million() -> None:
    assert units.mw_to_kw(0.4) == 400.0 and isinstance(units.mw_to_kw(0.4), float)
    assert units.mw_to_kw(np.array([0.0, -0.011])).tolist() == [0.0, -11.0]
    assert units.ppm_to_fraction(950_000) == pytest.approx(0.95)
    assert units.ppm_to_fraction(np.array([1_000_000, 0])).tolist() == [1.0, 0.0]


def test_hashed_input_scales_round_trip() -> None:
    assert units.pu_to_nano_pu(1e-5) == 10_000 and units.nano_pu_to_pu(10_000) == 1e-5
    assert units.pct_to_milli_pct(100.0) == 100_000 and units.milli_pct_to_pct(10) == 0.01
