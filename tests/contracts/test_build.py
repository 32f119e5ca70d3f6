"""The committed contract artifacts equal a fresh compile with npm solc 0.8.28 (chain/build.py).

Skipped only where no compiler is installed (no node or no ``npm ci``); under CI (environment
variable CI set) a missing compiler fails instead of skipping.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from eth_utils import keccak

from gridshare.chain import build, contracts_cli
from gridshare.chain.artifacts import CONTRACT_NAMES, load_artifact

MISSING = build.compiler_missing_reason()


@pytest.fixture(scope="module")
def fresh() -> dict[str, dict[str, Any]]:
    """A fresh compile (skips without a compiler, fails under CI)."""
    if MISSING is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must be able to compile the contracts: {MISSING}")
        pytest.skip(f"no contract compiler installed: {MISSING}")
    return build.build()


def test_committed_artifacts_equal_fresh_compile(fresh: dict[str, dict[str, Any]]) -> None:
    assert sorted(fresh) == sorted(CONTRACT_NAMES)
    assert build.artifact_differences(fresh) == []
    for name in CONTRACT_NAMES:
        committed_text = (build.ARTIFACTS_DIR / f"{name}.json").read_text()
        assert committed_text == build.artifact_text(fresh[name])


def test_artifacts_record_compiler_and_source_hashes(fresh: dict[str, dict[str, Any]]) -> None:
    for name, source in build.CONTRACTS.items():
        art = load_artifact(name)
        assert art["compiler"]["version"].startswith("0.8.28+commit.")
        assert art["compiler"]["settings"]["evmVersion"] == "cancun"
        assert art["compiler"]["settings"]["optimizer"] == {"enabled": True, "runs": 200}
        own = (build.REPO_ROOT / source).read_bytes()
        assert art["sources"][source]["keccak256"] == "0x" + keccak(own).hex()
        assert art["bytecode"] == fresh[name]["bytecode"]
        assert art["deployedBytecode"][-100:] in art["bytecode"]  # same metadata hash


def test_difference_check_catches_a_stale_artifact(
    fresh: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    build.write_artifacts(fresh, tmp_path)
    assert build.artifact_differences(fresh, tmp_path) == []
    stale = json.loads((tmp_path / "GridMarket.json").read_text())
    stale["bytecode"] = stale["bytecode"][:-2] + "00"
    (tmp_path / "GridMarket.json").write_text(json.dumps(stale))
    (tmp_path / "GridCapacity.json").unlink()
    problems = build.artifact_differences(fresh, tmp_path)
    assert any("GridMarket.json: 'bytecode' differs" in p for p in problems)
    assert any("GridCapacity.json: missing" in p for p in problems)


def test_wrapper_writes_large_output_as_pure_json(fresh: dict[str, dict[str, Any]]) -> None:
    solc_input = build.standard_input()
    solc_input["settings"]["outputSelection"] = {"*": {"*": ["abi", "metadata"], "": ["ast"]}}
    proc = subprocess.run(
        [str(build.WRAPPER), "--standard-json", "--base-path", str(build.REPO_ROOT)],
        input=json.dumps(solc_input),
        capture_output=True,
        text=True,
        check=True,
        cwd=build.REPO_ROOT,
    )
    assert len(proc.stdout) > 4 * 65536  # well past one pipe buffer
    output = json.loads(proc.stdout)  # the whole stdout is one JSON document
    assert "GridMarket" in output["contracts"]["contracts/src/GridMarket.sol"]


def test_wrapper_rejects_unknown_option() -> None:
    if MISSING is not None and not os.environ.get("CI"):
        pytest.skip(f"no contract compiler installed: {MISSING}")
    proc = subprocess.run(
        [str(build.WRAPPER), "--bin"], capture_output=True, text=True, cwd=build.REPO_ROOT
    )
    assert proc.returncode == 1
    assert "unrecognised option '--bin'" in proc.stderr


def test_cli_check_reports_up_to_date(
    fresh: dict[str, dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(build, "build", lambda: fresh)  # the compile itself is tested above
    parser = argparse.ArgumentParser()
    contracts_cli.add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["contracts", "build", "--check"])
    assert args.func(args) == 0
    assert "artifacts up to date" in capsys.readouterr().out


def test_load_artifact_rejects_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown contract 'Nope'"):
        load_artifact("Nope")


def test_cli_check_fails_on_stale_artifacts(
    fresh: dict[str, dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    changed = {name: dict(art) for name, art in fresh.items()}
    changed["GridCapacity"]["abi"] = []
    monkeypatch.setattr(build, "build", lambda: changed)
    parser = argparse.ArgumentParser()
    contracts_cli.add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["contracts", "build", "--check"])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert "GridCapacity.json: 'abi' differs" in err and "artifacts are stale" in err


def test_compile_without_compiler_names_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "compiler_missing_reason", lambda: "node is not installed")
    with pytest.raises(ValueError, match="cannot compile the contracts: node is not installed"):
        build.compile_contracts()


def test_solc_errors_surface_as_value_error(
    fresh: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = {
        "language": "Solidity",
        "sources": {"Broken.sol": {"content": "pragma solidity 0.8.28; contract B { uint x = ; }"}},
        "settings": build.SETTINGS,
    }
    monkeypatch.setattr(build, "standard_input", lambda: broken)
    with pytest.raises(ValueError, match=r"solc failed: .*ParserError"):
        build.compile_contracts()
