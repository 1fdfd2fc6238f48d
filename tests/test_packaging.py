"""pyproject.toml's ``requires-python`` admits no Python that an installed dependency excludes.

Poetry resolves for every Python the range admits, so a range wider than a
dependency's fails ``poetry lock``; pip users on such a Python get a failed
install. The dependencies' own ``Requires-Python`` metadata is the truth.
"""

from __future__ import annotations

import tomllib
from importlib import metadata

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import ROOT

# every CPython release number a range could name, 3.0.0 .. 3.29.39
PYTHONS = [Version(f"3.{minor}.{micro}") for minor in range(30) for micro in range(40)]


def requires_python() -> SpecifierSet:
    return SpecifierSet(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"])


def dependency_closure(project: str = "pfedhn", extras: tuple[str, ...] = ("dev",)) -> dict[str, metadata.Distribution]:
    """Every installed distribution ``project[extras]`` needs here (markers evaluated for this Python)."""
    found: dict[str, metadata.Distribution] = {}
    pending = [(project, extras)]
    while pending:
        name, wanted = pending.pop()
        dist = metadata.distribution(name)
        found[canonicalize_name(name)] = dist
        for line in dist.requires or []:
            requirement = Requirement(line)
            envs = [dict(default_environment(), extra=extra) for extra in ("", *wanted)]
            if requirement.marker is not None and not any(requirement.marker.evaluate(env) for env in envs):
                continue
            key = canonicalize_name(requirement.name)
            if key not in found:
                pending.append((requirement.name, tuple(requirement.extras)))
    return found


def excluded(ours: SpecifierSet, theirs: SpecifierSet) -> list[Version]:
    """Pythons ``ours`` admits and ``theirs`` does not."""
    return [v for v in PYTHONS if v in ours and v not in theirs]


def test_requires_python_admits_no_python_a_dependency_excludes() -> None:
    ours = requires_python()
    clashes = []
    for name, dist in sorted(dist_items := dependency_closure().items()):
        theirs = dist.metadata.get("Requires-Python")
        if theirs and (bad := excluded(ours, SpecifierSet(theirs))):
            clashes.append(f"{name} {dist.version} needs Python {theirs}, but requires-python {ours} admits {bad[0]}")
    assert len(dist_items) > 20  # the closure was walked (flwr, torch, ray and theirs)
    assert not clashes, "\n".join(clashes)


def test_the_check_catches_a_range_wider_than_flowers() -> None:
    """The range README once had: flwr needs Python >= 3.11."""
    flower = SpecifierSet(metadata.distribution("flwr").metadata["Requires-Python"])
    assert Version("3.10.0") in excluded(SpecifierSet(">=3.10"), flower)
