"""Run slither on the contracts, offline, through its Python API and the npm solc wrapper.

Usage (repo root): ``python contracts/slither_check.py``. Compiles the same standard-JSON input as
``gridshare.chain.build`` with ``contracts/solc-wrapper.js`` (crytic-compile's ``SolcStandardJson``
platform, so slither never downloads a compiler), runs every detector and prints the findings of
impact High and Medium. Exit 1 when a High finding is not in ``EXPLAINED_HIGH`` (each explained in
docs/contracts.md), 0 otherwise.

slither-analyzer pins ``web3<8`` although its analysis never imports web3; CI therefore installs it
with ``pip install --no-deps`` next to web3 8 (see .ci/run).
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gridshare.chain import build

#: (detector, contract.function) of High findings reviewed and explained in docs/contracts.md.
EXPLAINED_HIGH: frozenset[tuple[str, str]] = frozenset(
    {
        # OpenZeppelin's Math.mulDiv seeds Newton's inverse with `(3 * denominator) ^ 2`: the XOR
        # is intended (a 4-bit-correct inverse seed), not a mistyped exponent.
        ("incorrect-exp", "Math.mulDiv(uint256,uint256,uint256)"),
    }
)
REPORTED_IMPACTS = ("High", "Medium")


def run_slither() -> list[dict]:
    """All slither findings (each a dict with check, impact, description, elements)."""
    from crytic_compile.platform.solc_standard_json import SolcStandardJson
    from slither import Slither
    from slither.detectors import all_detectors
    from slither.detectors.abstract_detector import AbstractDetector

    reason = build.compiler_missing_reason()
    if reason is not None:
        raise SystemExit(f"slither_check: cannot compile: {reason}")
    solc_input = build.standard_input()
    solc_input["settings"]["outputSelection"] = {
        "*": {"*": ["abi", "metadata", "evm.bytecode", "evm.deployedBytecode"], "": ["ast"]}
    }
    slither = Slither(
        SolcStandardJson(solc_input),
        solc=str(build.WRAPPER),
        solc_working_dir=str(build.REPO_ROOT),
    )
    for _, detector in inspect.getmembers(all_detectors, inspect.isclass):
        if issubclass(detector, AbstractDetector):
            slither.register_detector(detector)
    return [finding for results in slither.run_detectors() for finding in results]


def finding_key(finding: dict) -> tuple[str, str]:
    """(detector, first function named by the finding as Contract.signature, else first name)."""
    for element in finding.get("elements", []):
        if element.get("type") == "function":
            fields = element.get("type_specific_fields", {})
            parent = fields.get("parent", {}).get("name", "")
            return finding["check"], f"{parent}.{fields.get('signature', element['name'])}"
    first = finding.get("elements", [{}])[0]
    return finding["check"], first.get("name", "")


def main() -> int:
    """Print High/Medium findings; exit 1 on an unexplained High finding."""
    findings = run_slither()
    unexplained = []
    for finding in sorted(findings, key=lambda f: (f["impact"], f["check"])):
        if finding["impact"] not in REPORTED_IMPACTS:
            continue
        key = finding_key(finding)
        explained = finding["impact"] != "High" or key in EXPLAINED_HIGH
        if finding["impact"] == "High":
            mark = "explained in docs/contracts.md" if explained else "UNEXPLAINED"
        else:
            mark = "reviewed, see docs/contracts.md"
        first_line = finding["description"].strip().splitlines()[0]
        print(f"[{finding['impact']}] {finding['check']} ({mark}): {first_line}")
        if not explained:
            unexplained.append(key)
    counts = {i: sum(f["impact"] == i for f in findings) for i in ("High", "Medium", "Low")}
    print(
        f"slither: {counts['High']} high, {counts['Medium']} medium, {counts['Low']} low findings"
    )
    if unexplained:
        print(f"slither: unexplained High findings: {unexplained}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
