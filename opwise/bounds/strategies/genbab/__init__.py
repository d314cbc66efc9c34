"""GenBaB: branch-and-bound over the inputs of general nonlinearities (search.py), with domains bounded in
batches (bounding.py), the branching heuristics (branching.py), domains (domains.py) and split points
from pre-optimised tables (split_points.py)."""
