"""How much work one engine pass takes on at once (module constants, so a test or a user may change them)."""

#: largest number of one-hot specifications in one backward pass for intermediate bounds
SPEC_CHUNK = 4096

#: a dense pass with at least this many specs that reaches a node carrying windows is offered them
#: (`Patches.from_dense`): few specs cost little dense, and a search's domains are never windows
WINDOW_MIN_SPECS = 256

#: "mixed" policy: nodes with at most this many elements per sample get backward CROWN intermediate bounds
CROWN_LIMIT = 64
