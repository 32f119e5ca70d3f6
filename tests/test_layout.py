"""Repository layout rules that broke things before."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"gridshare", "capacity", "market", "oracle", "contracts"}


def test_bench_scripts_do_not_shadow_the_project_packages() -> None:
    # `python bench/X.py` puts bench/ first on sys.path: bench/oracle.py would hide the oracle
    # package from every other bench script.
    stems = {path.stem for path in (ROOT / "bench").glob("*.py")}
    assert stems, "bench/ has no scripts"
    assert not stems & PACKAGES


def test_every_test_folder_is_a_package() -> None:
    # Without tests/__init__.py, tests/market would be imported as `market` and hide the package.
    folders = [ROOT / "tests", *[p for p in (ROOT / "tests").iterdir() if p.is_dir()]]
    folders = [f for f in folders if any(f.glob("test_*.py"))]
    assert folders
    missing = [str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").exists()]
    assert not missing, f"test folders without __init__.py: {missing}"
