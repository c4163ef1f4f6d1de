"""The upstream versions the fast components are verified against, checked when `data_pipeline.fast` is imported.

Each fast component gives the same decisions and outputs as the stock one it replaces only for the upstream
code its equivalence tests (tests/fast/) ran against, and several read upstream internals. A version outside
these ranges is an ImportError naming the package, its version and the verified range, rather than a
fallback to the stock components: a silent fallback would change the run's speed and, should the stock
component itself have changed, its outputs. To widen a range, run tests/fast/ with the new version.
pyproject.toml pins the same ranges, so an ordinary install is inside them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata


def _release(version: str) -> tuple[int, ...]:
    """The release numbers at the start of a version string: "3.8.18" -> (3, 8, 18), "6.3.0rc1" -> (6, 3, 0)."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    if match is None:
        raise ValueError(f"cannot read the version {version!r}")
    return tuple(int(part) for part in match.group().split("."))


@dataclass(frozen=True)
class VerifiedRange:
    """Versions of `package` from `minimum` (included) up to `below` (excluded)."""

    package: str
    minimum: str
    below: str

    def __contains__(self, version: str) -> bool:
        return _release(self.minimum) <= _release(version) < _release(self.below)

    def __str__(self) -> str:
        return f">={self.minimum},<{self.below}"


VERIFIED_RANGES = (
    VerifiedRange("datatrove", "0.10.1", "0.11"),
    VerifiedRange("trafilatura", "1.11", "1.12"),
    VerifiedRange("ftfy", "6.3", "6.4"),
    VerifiedRange("spacy", "3.8", "3.9"),
)


def check_versions(
    ranges: Iterable[VerifiedRange] = VERIFIED_RANGES, installed: Callable[[str], str] = metadata.version
) -> None:
    """Raise ImportError if a package of `ranges` is missing or its installed version is outside its range."""
    for verified in ranges:
        try:
            version = installed(verified.package)
        except metadata.PackageNotFoundError:
            raise ImportError(
                f"components=fast needs the package {verified.package} ({verified}), which is not installed: "
                f"pip install '{verified.package}{verified}'"
            ) from None
        if version not in verified:
            raise ImportError(
                f"components=fast is verified with {verified.package} {verified}, but {version} is installed: "
                f"pip install '{verified.package}{verified}'"
            )
