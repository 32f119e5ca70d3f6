"""Where the fleet's feeders come from: seeded built-in variants or a directory of files.

A ``FeederSource`` is the small, picklable description the client sends to the cluster;
``build_model`` turns it into a ``FeederModel`` on a worker (the model is built once per feeder
and shipped from there to the workers that need it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gridshare.fleet.files import build_from_file, feeder_files
from gridshare.fleet.model import FeederModel
from gridshare.fleet.variants import build_variant, variant_name


@dataclass(frozen=True)
class FeederSource:
    """One feeder: a built-in variant (``index``) or a file (``filename`` and its ``text``)."""

    name: str
    index: int | None = None
    filename: str = ""
    text: str = ""

    @property
    def description(self) -> str:
        return self.filename or f"variant {self.index}"


def variant_sources(n_feeders: int) -> list[FeederSource]:
    """The first ``n_feeders`` built-in variants (``gridshare.fleet.variants``)."""
    if n_feeders < 1:
        raise ValueError(f"--feeders must be >= 1, got {n_feeders}")
    return [FeederSource(variant_name(i), index=i) for i in range(n_feeders)]


def file_sources(directory: Path, n_feeders: int | None = None) -> list[FeederSource]:
    """The feeder files of ``directory`` by name (the first ``n_feeders`` if given)."""
    files = feeder_files(directory)
    if n_feeders is not None:
        if n_feeders < 1:
            raise ValueError(f"--feeders must be >= 1, got {n_feeders}")
        files = files[:n_feeders]
    return [FeederSource(p.stem, filename=p.name, text=p.read_text(encoding="utf-8"))
            for p in files]


def build_model(source: FeederSource, seed: int) -> FeederModel:
    """The feeder model of ``source`` (runs on a worker; errors name the feeder's file)."""
    if source.index is not None:
        return build_variant(source.index, seed)
    return build_from_file(source.name, source.filename, source.text, seed)
