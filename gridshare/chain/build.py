"""Reproducible build of the Solidity contracts into the committed JSON artifacts.

solc 0.8.28 comes from the npm package ``solc`` (``npm ci`` at the repo root) and is called
through py-solc-x (``solcx.compile_standard(..., solc_binary=...)``) with the Node wrapper
``contracts/solc-wrapper.js``: the stock ``solcjs`` command prints a non-JSON line when no SMT
solver is installed and truncates outputs over 64 KiB on a pipe. The compile needs a source
checkout (``contracts/`` and ``node_modules/``); an installed wheel only reads the artifacts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
WRAPPER = REPO_ROOT / "contracts" / "solc-wrapper.js"
ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
SOLC_VERSION = "0.8.28"
EVM_VERSION = "cancun"
OPTIMIZER_RUNS = 200

#: Source unit names (paths relative to the repo root) of the contracts to build.
SOURCES: tuple[str, ...] = ("contracts/src/GridCapacity.sol", "contracts/src/GridMarket.sol")
#: Contract name -> source unit that defines it: one artifact each.
CONTRACTS: dict[str, str] = {
    "GridCapacity": "contracts/src/GridCapacity.sol",
    "GridMarket": "contracts/src/GridMarket.sol",
}

SETTINGS: dict[str, Any] = {
    "evmVersion": EVM_VERSION,
    "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
    "viaIR": False,
    "remappings": ["@openzeppelin/contracts/=node_modules/@openzeppelin/contracts/"],
    "metadata": {"bytecodeHash": "ipfs"},
    "outputSelection": {
        "*": {
            "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "metadata"],
            "": [],
        }
    },
}


def compiler_missing_reason() -> str | None:
    """Why no compile is possible here (None when node, the wrapper and npm solc are present)."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not WRAPPER.is_file():
        return f"no compiler wrapper at {WRAPPER} (not a source checkout)"
    if not (REPO_ROOT / "node_modules" / "solc" / "package.json").is_file():
        return "npm package solc is not installed (run `npm ci` at the repo root)"
    if not (REPO_ROOT / "node_modules" / "@openzeppelin" / "contracts").is_dir():
        return "npm package @openzeppelin/contracts is not installed (run `npm ci`)"
    return None


def solc_long_version() -> str:
    """The full version string of the wrapped compiler, e.g. ``0.8.28+commit.7893614a...``."""
    out = subprocess.run(
        [str(WRAPPER), "--version"], check=True, capture_output=True, text=True, cwd=REPO_ROOT
    ).stdout
    for line in out.splitlines():
        if line.startswith("Version: "):
            return line.removeprefix("Version: ").strip()
    raise ValueError(f"cannot read a version from the solc wrapper output: {out!r}")


def standard_input() -> dict[str, Any]:
    """The solc standard-JSON input: our sources by content, OpenZeppelin by import callback."""
    sources = {name: {"content": (REPO_ROOT / name).read_text()} for name in SOURCES}
    return {"language": "Solidity", "sources": sources, "settings": SETTINGS}


def compile_contracts() -> dict[str, Any]:
    """Run solc through py-solc-x and the wrapper; the raw standard-JSON output.

    Raises ValueError naming the problem when no compiler is available or solc reports errors.
    """
    import solcx
    import solcx.exceptions

    reason = compiler_missing_reason()
    if reason is not None:
        raise ValueError(f"cannot compile the contracts: {reason}")
    version = solc_long_version()
    if not version.startswith(SOLC_VERSION + "+"):
        raise ValueError(f"solc {SOLC_VERSION} required, the wrapper runs {version}")
    try:
        output = solcx.compile_standard(
            standard_input(),
            base_path=str(REPO_ROOT),
            allow_paths=[str(REPO_ROOT)],
            solc_binary=str(WRAPPER),
        )
    except solcx.exceptions.SolcError as exc:
        raise ValueError(f"solc failed: {_solc_messages(exc.stdout_data) or exc}") from exc
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise ValueError("solc errors:\n" + "\n".join(e["formattedMessage"] for e in errors))
    return output


def _solc_messages(stdout: str) -> str:
    """The formatted error messages of a standard-JSON output (empty if none or not JSON)."""
    try:
        errors = json.loads(stdout).get("errors", [])
    except (json.JSONDecodeError, AttributeError):
        return ""
    return "\n".join(e.get("formattedMessage", "") for e in errors if e.get("severity") == "error")


def artifacts_from_output(output: dict[str, Any], solc_version: str) -> dict[str, dict[str, Any]]:
    """One artifact per contract: abi, bytecode, deployedBytecode, compiler and source hashes."""
    artifacts: dict[str, dict[str, Any]] = {}
    for name, source in CONTRACTS.items():
        compiled = output["contracts"][source][name]
        metadata = json.loads(compiled["metadata"])
        artifacts[name] = {
            "contractName": name,
            "sourceName": source,
            "abi": compiled["abi"],
            "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
            "deployedBytecode": "0x" + compiled["evm"]["deployedBytecode"]["object"],
            "compiler": {
                "name": "solc (npm solc via contracts/solc-wrapper.js)",
                "version": solc_version,
                "settings": {k: v for k, v in SETTINGS.items() if k != "outputSelection"},
            },
            "sources": {
                unit: {"keccak256": info["keccak256"]}
                for unit, info in sorted(metadata["sources"].items())
            },
        }
    return artifacts


def build() -> dict[str, dict[str, Any]]:
    """Compile and return the artifacts (not written)."""
    return artifacts_from_output(compile_contracts(), solc_long_version())


def artifact_text(artifact: dict[str, Any]) -> str:
    """The canonical file text of an artifact (sorted keys, 2-space indent, final newline)."""
    return json.dumps(artifact, indent=2, sort_keys=True) + "\n"


def write_artifacts(
    artifacts: dict[str, dict[str, Any]], out_dir: Path = ARTIFACTS_DIR
) -> list[Path]:
    """Write ``<name>.json`` per contract into ``out_dir``; the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, artifact in artifacts.items():
        path = out_dir / f"{name}.json"
        path.write_text(artifact_text(artifact))
        paths.append(path)
    return paths


def artifact_differences(
    artifacts: dict[str, dict[str, Any]], out_dir: Path = ARTIFACTS_DIR
) -> list[str]:
    """Human-readable differences between fresh artifacts and the files in ``out_dir``."""
    problems = []
    for name, artifact in artifacts.items():
        path = out_dir / f"{name}.json"
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        committed = json.loads(path.read_text())
        for key in sorted(set(artifact) | set(committed)):
            if artifact.get(key) != committed.get(key):
                problems.append(f"{path}: '{key}' differs from a fresh compile")
    return problems
