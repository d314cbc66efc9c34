"""benchmarks/vnnlib2_suites.py writes suites opwise reads: every property parses, the rewritten ACAS Xu properties
give the Specifications of the originals, and the pruned copies differ from their networks."""

from __future__ import annotations

import csv

import pytest
import torch

from benchmarks.vnnlib2_suites import build
from opwise.bounds.vnncomp.networks import parse_networks
from opwise.bounds.vnncomp.vnnlib import parse_property, parse_vnnlib


def test_the_written_suites_parse_and_match_the_originals(benchmarks_dir, tmp_path):
    pytest.importorskip("onnx")
    suites = build(benchmarks_dir / "acasxu", tmp_path, limit=3)
    assert [s.name for s in suites] == ["acasxu_v2", "acasxu_pruned", "acasxu_ordered"]
    with open(benchmarks_dir / "acasxu" / "instances.csv", newline="") as handle:
        originals = [row[1] for row in csv.reader(handle) if row][:3]
    for suite in suites:
        with open(suite / "instances.csv", newline="") as handle:
            rows = [row for row in csv.reader(handle) if row]
        assert len(rows) == 3
        for network, prop, _ in rows:
            query = parse_property(suite / prop, torch.float64)
            assert query.layout is not None and all(suite.joinpath(p).exists() or p.startswith("/")
                                                    for _, p in parse_networks(network))
    for original, (_, prop, _) in zip(originals, rows_of(suites[0])):
        for one, other in zip(parse_vnnlib(benchmarks_dir / "acasxu" / original), parse_vnnlib(suites[0] / prop)):
            assert torch.equal(one.x_lower.flatten(), other.x_lower.flatten())
            assert all(torch.equal(d.C, e.C) and torch.equal(d.d, e.d) for d, e in zip(one.unsafe, other.unsafe))
    ordered = parse_property(suites[2] / "ordered.vnnlib", torch.float64).specs[0]
    assert ordered.region.constraints is not None  # the second copy's distance at most the first's


def rows_of(suite):
    with open(suite / "instances.csv", newline="") as handle:
        return [row for row in csv.reader(handle) if row]
