"""How much work one engine pass takes on at once (module constants, so a test or a user may change them)."""

#: largest number of one-hot specifications in one backward pass for intermediate bounds
SPEC_CHUNK = 4096

#: "mixed" policy: nodes with at most this many elements per sample get backward CROWN intermediate bounds
CROWN_LIMIT = 64
