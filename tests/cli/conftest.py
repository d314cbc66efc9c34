"""Fixtures for the CLI tests: every model source, built once."""

from __future__ import annotations

import warnings

import pytest

from tests.cli.sources import build


@pytest.fixture(scope="session")
def sources(tmp_path_factory):
    pytest.importorskip("onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build(tmp_path_factory.mktemp("sources"))
