"""Importing data_pipeline.fast with an upstream version outside the verified range is a clear error."""

from __future__ import annotations

from importlib import metadata

import pytest

from data_pipeline.fast.versions import VERIFIED_RANGES, VerifiedRange, check_versions

SPACY = VerifiedRange("spacy", "3.8", "3.9")


def test_installed_versions_are_verified():
    check_versions()
    assert {verified.package for verified in VERIFIED_RANGES} == {"datatrove", "trafilatura", "ftfy", "spacy"}


@pytest.mark.parametrize("version", ["3.7.5", "3.9.0", "4.0.0"])
def test_version_outside_the_range_names_package_version_and_range(version):
    with pytest.raises(ImportError, match=rf"spacy >=3\.8,<3\.9, but {version} is installed"):
        check_versions([SPACY], installed=lambda package: version)


@pytest.mark.parametrize("version", ["3.8", "3.8.18", "3.8.0rc1"])
def test_versions_inside_the_range_pass(version):
    check_versions([SPACY], installed=lambda package: version)


def test_missing_package_is_named():
    def installed(package: str) -> str:
        raise metadata.PackageNotFoundError(package)

    with pytest.raises(ImportError, match=r"needs the package spacy \(>=3\.8,<3\.9\), which is not installed"):
        check_versions([SPACY], installed=installed)
