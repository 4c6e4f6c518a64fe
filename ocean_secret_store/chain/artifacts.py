"""Find, load and link the keeper-contracts 0.13.2 artifacts installed by the PyPI package.

The wheel installs ``<Name>.<network>.json`` files (``name``, ``abi``, creation ``bytecode``,
proxy ``address``, ``implementation``, ``version``) into ``<sys.prefix>/artifacts/`` (ocean.md §4.5).
We locate them through the installed distribution's file list first, because a ``--user`` or
``--prefix`` install puts them somewhere other than ``sys.prefix``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

from ..exceptions import ArtifactError
from ..protocol.hexcodec import parse_hex

#: The distribution that ships the artifacts (ocean.md §4.5).
DISTRIBUTION = "keeper-contracts"
#: The network whose artifacts carry v0.13.2 bytecode (deployable on any fresh dev chain).
DEVELOPMENT = "development"
#: Environment override for the artifacts directory.
ENV_DIR = "OCEAN_SS_KEEPER_ARTIFACTS"

# Legacy truffle placeholders: "__" + name, padded with "_" to 40 characters (one address).
_PLACEHOLDER = re.compile(r"__[A-Za-z0-9_]{38}")
_PLACEHOLDER_LEN = 40


@dataclass(frozen=True)
class Artifact:
    """One contract artifact of one network."""

    name: str
    network: str
    abi: list[dict[str, Any]] = field(repr=False)
    bytecode: str = field(repr=False)
    address: str | None
    version: str | None
    path: Path

    @property
    def link_references(self) -> frozenset[str]:
        """Library names whose placeholders appear in the bytecode (empty when deployable as is)."""
        return library_placeholders(self.bytecode)

    def linked_bytecode(self, libraries: Mapping[str, str] | None = None) -> str:
        """The creation bytecode with every library placeholder replaced by its address."""
        return link_bytecode(self.bytecode, libraries or {}, contract=self.name)


def _from_distribution() -> Path | None:
    try:
        dist = distribution(DISTRIBUTION)
    except PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.name.endswith(".json") and "artifacts" in file.parts:
            located = Path(str(dist.locate_file(file))).resolve()
            if located.is_file():
                return located.parent
    return None


@lru_cache(maxsize=1)
def _default_dir() -> Path:
    candidates: list[Path] = []
    found = _from_distribution()
    if found is not None:
        candidates.append(found)
    candidates += [Path(sys.prefix) / "artifacts", Path(sys.base_prefix) / "artifacts"]
    for candidate in candidates:
        if candidate.is_dir() and any(candidate.glob(f"*.{DEVELOPMENT}.json")):
            return candidate
    raise ArtifactError(
        f"keeper-contracts artifacts not found (looked in {', '.join(map(str, candidates))}): "
        f"install {DISTRIBUTION}==0.13.2 or set {ENV_DIR}"
    )


def artifacts_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """The artifacts directory: ``directory`` if given, else ``$OCEAN_SS_KEEPER_ARTIFACTS``, else the installed one."""
    chosen = directory if directory is not None else os.environ.get(ENV_DIR)
    if chosen is not None:
        path = Path(chosen)
        if not path.is_dir():
            raise ArtifactError(f"artifacts directory {path} does not exist")
        return path
    return _default_dir()


def networks(directory: str | os.PathLike[str] | None = None) -> list[str]:
    """Network names that have at least one artifact (``development``, ``nile``, ...), sorted."""
    found = {p.name.split(".")[-2] for p in artifacts_dir(directory).glob("*.*.json")}
    return sorted(found)


def contract_names(network: str = DEVELOPMENT, directory: str | os.PathLike[str] | None = None) -> list[str]:
    """Contract names with an artifact for ``network``, sorted."""
    suffix = f".{network}.json"
    return sorted(p.name[: -len(suffix)] for p in artifacts_dir(directory).glob(f"*{suffix}"))


def load_artifact(name: str, network: str = DEVELOPMENT, directory: str | os.PathLike[str] | None = None) -> Artifact:
    """Load ``<name>.<network>.json``; raises :class:`ArtifactError` if it is missing or malformed."""
    base = artifacts_dir(directory)
    path = base / f"{name}.{network}.json"
    return _load(str(path), name, network)


@lru_cache(maxsize=256)
def _load(path_text: str, name: str, network: str) -> Artifact:
    path = Path(path_text)
    if not path.is_file():
        known = networks(path.parent)
        raise ArtifactError(f"no artifact {path.name} in {path.parent} (networks there: {', '.join(known) or 'none'})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"artifact {path} is unreadable: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("abi"), list):
        raise ArtifactError(f"artifact {path} has no 'abi' list")
    bytecode = data.get("bytecode")
    if not isinstance(bytecode, str) or not bytecode.startswith("0x"):
        raise ArtifactError(f"artifact {path} has no '0x' creation 'bytecode'")
    address = data.get("address")
    return Artifact(
        name=str(data.get("name") or name),
        network=network,
        abi=data["abi"],
        bytecode=bytecode,
        address=address if isinstance(address, str) and address else None,
        version=data.get("version"),
        path=path,
    )


def library_placeholders(bytecode: str) -> frozenset[str]:
    """Names of the libraries referenced by 40-character truffle placeholders in ``bytecode``."""
    return frozenset(match.group(0).strip("_") for match in _PLACEHOLDER.finditer(bytecode))


def link_bytecode(bytecode: str, libraries: Mapping[str, str], *, contract: str = "contract") -> str:
    """Replace each ``__<Library>____...`` placeholder with that library's address (40 hex, no ``0x``).

    Raises :class:`ArtifactError` if a referenced library has no address, or an address is not 20 bytes.
    """
    linked = bytecode
    for name in sorted(library_placeholders(bytecode)):
        if name not in libraries:
            known = sorted(libraries) or "none"
            raise ArtifactError(f"{contract} needs library {name} linked; got addresses for {known}")
        address = parse_hex(libraries[name], f"library {name} address", 20, prefix=None, error=ArtifactError).hex()
        placeholder = f"__{name}".ljust(_PLACEHOLDER_LEN, "_")
        linked = linked.replace(placeholder, address)
    if library_placeholders(linked):
        raise ArtifactError(f"{contract} bytecode still has unlinked placeholders after linking")
    return linked
