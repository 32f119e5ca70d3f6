"""``gridshare serve``'s DSO audit options: the loading limits and the oracle's hashed settings
become the audit's ``OracleConfig`` through ``oracle run``'s own mapping."""

from __future__ import annotations

import pytest

from gridshare.api.cli import _audit_config
from gridshare.cli import build_parser
from oracle.service import OracleConfig


def test_serve_options_become_the_audits_oracle_settings() -> None:
    args = build_parser().parse_args([
        "serve", "--max-line-loading-pct", "80", "--max-trafo-loading-pct", "120.5",
        "--forecast", "last", "--n-random", "30", "--nr-random", "0", "--seed", "7",
        "--ga-population", "8", "--ga-generations", "9", "--objective", "fair",
        "--max-reading-age-s", "600"])
    config = _audit_config(args)
    assert (config.ocm.max_line_loading_pct, config.ocm.max_trafo_loading_pct) == (80.0, 120.5)
    assert (config.ocm.forecast, config.ocm.n_random, config.ocm.seed, config.ocm.objective,
            config.ocm.ga_population, config.ocm.ga_max_generations) == ("last", 30, 7, "fair",
                                                                          8, 9)
    assert config.nr.n_random == 0 and config.window.max_age_s == 600


def test_serve_defaults_are_the_oracles() -> None:
    config = _audit_config(build_parser().parse_args(["serve"]))
    default = OracleConfig()
    assert (config.ocm, config.nr, config.window, config.forecast_seed) == (
        default.ocm, default.nr, default.window, default.forecast_seed)


def test_serve_band_policy_is_the_simulations_and_needs_the_fair_objective() -> None:
    from capacity.ocm.policy import BandPolicy

    config = _audit_config(build_parser().parse_args(["serve", "--band-policy"]))
    assert (config.ocm.objective, config.ocm.band_policy) == ("fair", BandPolicy())
    with pytest.raises(ValueError, match="band_policy needs objective 'fair'"):
        _audit_config(build_parser().parse_args(["serve", "--band-policy", "--objective", "sum"]))


def test_serve_with_the_simulations_oracle_options_audits_the_simulations_bands() -> None:
    """The options the dashboard test passes give exactly the simulation's oracle settings."""
    from gridshare.sim.run import default_ocm

    args = build_parser().parse_args(["serve", "--forecast", "ramps", "--band-policy",
                                      "--battery-reserve-h", "8", "--history-days", "28",
                                      "--ramp-coverage", "0.95", "--battery-follows",
                                      "--reserve-station-kw", "7.4"])
    assert _audit_config(args).ocm == default_ocm()
    for bad in (["--battery-reserve-h", "25"], ["--ramp-coverage", "0"],
                ["--history-days", "0"], ["--reserve-station-kw", "-1"],
                ["--reserve-station-kw", "nan"]):
        with pytest.raises(ValueError):
            _audit_config(build_parser().parse_args(["serve", *bad]))
