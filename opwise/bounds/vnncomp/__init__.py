"""VNN-COMP: VNN-LIB properties (vnnlib.py; VNN-LIB 2 queries in vnnlib2.py, over several networks bounded as one in
joint.py), verifying one instance (instance.py), result files (results.py), network fields (networks.py) and whole
suites (runner.py). The command line's part is opwise/cli/vnncomp.py."""

from opwise.bounds.vnncomp.instance import load_with_engine, verify_instance
from opwise.bounds.vnncomp.joint import load_joint
from opwise.bounds.vnncomp.networks import parse_networks
from opwise.bounds.vnncomp.results import (InstanceResult, is_complete, read_result, result_file_name,
                                           result_file_names, write_result)
from opwise.bounds.vnncomp.runner import read_instances, run_suite, suite_bar
from opwise.bounds.vnncomp.vnnlib import parse_property, parse_vnnlib, violates
from opwise.bounds.vnncomp.vnnlib2 import Layout, Query

__all__ = ["InstanceResult", "Layout", "Query", "is_complete", "load_joint", "load_with_engine", "parse_networks",
           "parse_property", "parse_vnnlib", "read_instances", "read_result", "result_file_name", "result_file_names",
           "run_suite", "suite_bar", "verify_instance", "violates", "write_result"]
