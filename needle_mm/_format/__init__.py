"""The bytes of a Needle file: header, superblocks, catalog and segment regions.

Everything here is pure encoding and decoding (numpy dtypes, struct layouts,
validation of what comes from disk). No function in this package performs I/O;
``needle_mm._storage`` does that. Field names equal those in SPEC.md.
"""
