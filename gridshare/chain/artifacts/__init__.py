"""Committed build artifacts of the Solidity contracts (``<Name>.json``; see ``build.py``).

Each file holds ``abi``, ``bytecode``, ``deployedBytecode``, ``compiler`` (version and settings)
and ``sources`` (keccak256 of every source unit). They ship inside the wheel.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

ARTIFACTS_DIR = Path(__file__).resolve().parent
CONTRACT_NAMES: tuple[str, ...] = ("GridCapacity", "GridMarket")


@cache
def load_artifact(name: str) -> dict[str, Any]:
    """The artifact of contract ``name`` (one of CONTRACT_NAMES); ValueError for another name."""
    if name not in CONTRACT_NAMES:
        raise ValueError(f"unknown contract {name!r}; known: {', '.join(CONTRACT_NAMES)}")
    return json.loads((ARTIFACTS_DIR / f"{name}.json").read_text())
