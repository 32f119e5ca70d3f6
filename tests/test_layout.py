"""Repository layout rules that broke things before."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

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


# ---- dependency direction (pyproject.toml [tool.importlinter], docs/architecture.md)

STUB_MODULES = (
    "gridshare/__init__.py", "gridshare/cli.py", "gridshare/units.py",
    "gridshare/chain/__init__.py", "gridshare/api/__init__.py", "gridshare/sim/__init__.py",
    "gridshare/fleet/__init__.py",
    "capacity/__init__.py", "market/__init__.py", "oracle/__init__.py",
)


def _lint_imports_on_stub(tmp_path: Path, module: str, source: str) -> subprocess.CompletedProcess:
    """Run lint-imports with the project's own contracts on a stub tree with one extra import."""
    for rel in STUB_MODULES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    if module:
        (tmp_path / module).write_text(source)
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (tmp_path / ".importlinter").write_text(_ini_of(config))
    return subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--config", ".importlinter",
         "--no-cache"],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": "."},
        check=False,
    )


def _ini_of(config: dict) -> str:
    """The pyproject [tool.importlinter] table as the INI file lint-imports also reads."""
    def value(v) -> str:
        if isinstance(v, list):
            return "".join(f"\n    {item}" for item in v)
        return str(v)

    lines = ["[importlinter]"]
    lines += [f"{k} = {value(v)}" for k, v in config.items() if k != "contracts"]
    for i, contract in enumerate(config["contracts"]):
        lines += ["", f"[importlinter:contract:{i}]"]
        lines += [f"{k} = {value(v)}" for k, v in contract.items()]
    return "\n".join(lines) + "\n"


def test_the_import_contracts_hold_on_a_clean_stub(tmp_path: Path) -> None:
    result = _lint_imports_on_stub(tmp_path, "", "")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("module", "source"), [
    ("capacity/bad.py", "import web3\n"),
    ("capacity/bad.py", "import gridshare.chain\n"),
    ("market/bad.py", "import oracle\n"),
    ("oracle/bad.py", "import market\n"),
    ("gridshare/chain/bad.py", "import market\n"),
    ("market/bad.py", "import gridshare.api\n"),
    ("gridshare/units.py", "import capacity\n"),
])
def test_a_forbidden_import_fails_lint_imports(tmp_path: Path, module: str, source: str) -> None:
    result = _lint_imports_on_stub(tmp_path, module, source)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BROKEN" in result.stdout


def test_the_project_keeps_its_import_contracts() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_function_in_the_product_code_is_over_80_lines() -> None:
    """Functions are split by job (docs/architecture.md): def line to last line, docstring
    included, at most 80 lines."""
    import ast

    long = []
    for package in ("gridshare", "capacity", "market", "oracle"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    n_lines = node.end_lineno - node.lineno + 1
                    if n_lines > 80:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} "
                                    f"({n_lines} lines)")
    assert not long, long
