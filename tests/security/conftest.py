"""Shared fixtures of the security tests: a marker path that no payload may create."""

from __future__ import annotations

import pytest


@pytest.fixture
def marker(tmp_path):
    """Every crafted payload would create this path if it ran; the test fails if it exists afterwards."""
    path = tmp_path / "payload_ran"
    yield path
    assert not path.exists(), "code from a crafted input file ran"
