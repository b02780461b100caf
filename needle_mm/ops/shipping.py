"""What replicas ship (SPEC §6.2): a shipment's record, and the ranges of a run of commits.

Shared by the file replicas (``replicate``) and the object-store ones (``object_replica``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shipment:
    """What one step of replication did: the generation the replica is at
    now, the one it was at (None: no replica before), how (``"ranges"``,
    ``"copy"`` or ``"none"``: already current) and how many bytes it wrote."""

    generation: int
    previous: int | None
    mode: str
    bytes: int
    why: str = ""


def pending_ranges(catalog, d: int, g: int):
    """The ranges commits ``d + 1 .. g`` wrote, merged, or None if the catalog does not list them all."""
    listed = {gen: ranges for gen, ranges in catalog.written}
    if any(gen not in listed for gen in range(d + 1, g + 1)):
        return None
    out: list[list[int]] = []
    for lo, n in sorted(r for gen in range(d + 1, g + 1) for r in listed[gen]):
        hi = lo + n
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(lo, hi) for lo, hi in out]


def overlaps(ranges, extents) -> bool:
    """Whether any of the ascending, disjoint half-open ``ranges`` meets any
    non-empty half-open extent of ``extents``."""
    extents = sorted(extents)
    j = 0
    for lo, hi in ranges:
        while j < len(extents) and extents[j][1] <= lo:
            j += 1
        k = j
        while k < len(extents) and extents[k][0] < hi:
            if extents[k][1] > lo and extents[k][1] > extents[k][0]:
                return True
            k += 1
    return False


__all__ = ["Shipment", "overlaps", "pending_ranges"]
