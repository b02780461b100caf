"""File header and the two superblock slots (SPEC.md §2, §3).

The header is written once when the file is created and never again. The two
superblock slots are the only bytes of a file that are ever overwritten: a
commit writes the slot that does *not* hold the current generation, so a torn
write damages at most a superseded slot, whose CRC then fails and the other
slot wins.
"""

from __future__ import annotations

import uuid
import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import CorruptFileError, NotANeedleFileError, UnsupportedVersionError

MAGIC = b"NEEDLEMM"
SUPERBLOCK_MAGIC = b"NDLSUPER"
READ_VERSION = 1
WRITE_VERSION = 1
PAGE_SIZE = 4096
HEADER_OFFSET = 0
SUPERBLOCK_OFFSETS = (4096, 8192)
DATA_START = 12288
REGION_ALIGN = 64

HEADER_DTYPE = np.dtype(
    [
        ("magic", "S8"),
        ("read_version", "<u4"),
        ("write_version", "<u4"),
        ("page_size", "<u4"),
        ("header_size", "<u4"),
        ("file_uuid", "S16"),
        ("creator", "S20"),
        ("header_crc", "<u4"),
    ]
)
SUPERBLOCK_DTYPE = np.dtype(
    [
        ("magic", "S8"),
        ("generation", "<u8"),
        ("file_length", "<u8"),
        ("catalog_offset", "<u8"),
        ("catalog_length", "<u8"),
        ("catalog_crc", "<u4"),
        ("slot", "<u4"),
        ("commit_time_ns", "<u8"),
        ("reserved", "<u4"),
        ("superblock_crc", "<u4"),
    ]
)
assert HEADER_DTYPE.itemsize == 64 and SUPERBLOCK_DTYPE.itemsize == 64


def crc32(data) -> int:
    """CRC-32 (zlib/IEEE polynomial) of a bytes-like object, as an unsigned int."""
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass(frozen=True)
class Header:
    read_version: int
    write_version: int
    page_size: int
    file_uuid: bytes
    creator: str


@dataclass(frozen=True)
class Superblock:
    generation: int
    file_length: int
    catalog_offset: int
    catalog_length: int
    catalog_crc: int
    slot: int
    commit_time_ns: int


UUID_OFFSET = HEADER_DTYPE.fields["file_uuid"][1]


def encode_header(creator: str) -> bytes:
    rec = np.zeros((), dtype=HEADER_DTYPE)
    rec["magic"] = MAGIC
    rec["read_version"] = READ_VERSION
    rec["write_version"] = WRITE_VERSION
    rec["page_size"] = PAGE_SIZE
    rec["header_size"] = HEADER_DTYPE.itemsize
    rec["file_uuid"] = uuid.uuid4().bytes
    rec["creator"] = creator.encode("ascii")[:20]
    raw = bytearray(rec.tobytes())
    raw[60:64] = crc32(raw[:60]).to_bytes(4, "little")
    return bytes(raw)


def decode_header(raw: bytes, path: str) -> Header:
    """Parse the 64 header bytes; raise a NeedleError naming what is wrong."""
    if len(raw) < HEADER_DTYPE.itemsize or raw[:8] != MAGIC:
        raise NotANeedleFileError(f"{path!r} is not a Needle file (no NEEDLEMM magic at offset 0)")
    rec = np.frombuffer(raw[: HEADER_DTYPE.itemsize], dtype=HEADER_DTYPE)[0]
    if crc32(raw[:60]) != int(rec["header_crc"]):
        raise CorruptFileError(f"{path!r}: header CRC mismatch (bytes 0..63 are damaged)")
    if int(rec["read_version"]) > READ_VERSION:
        raise UnsupportedVersionError(
            f"{path!r} needs format read version {int(rec['read_version'])}; "
            f"this needle_mm reads up to version {READ_VERSION}: upgrade needle_mm"
        )
    if int(rec["page_size"]) != PAGE_SIZE or int(rec["header_size"]) != HEADER_DTYPE.itemsize:
        raise CorruptFileError(
            f"{path!r}: header declares page_size={int(rec['page_size'])}, "
            f"header_size={int(rec['header_size'])}; expected {PAGE_SIZE}, {HEADER_DTYPE.itemsize}"
        )
    return Header(
        read_version=int(rec["read_version"]),
        write_version=int(rec["write_version"]),
        page_size=int(rec["page_size"]),
        # Raw bytes, not the field: numpy's "S" type drops trailing NULs, and
        # one uuid in 256 ends in one (the file would then not equal itself).
        file_uuid=bytes(raw[UUID_OFFSET : UUID_OFFSET + 16]),
        creator=bytes(rec["creator"]).rstrip(b"\0").decode("ascii", "replace"),
    )


def encode_superblock(sb: Superblock) -> bytes:
    rec = np.zeros((), dtype=SUPERBLOCK_DTYPE)
    rec["magic"] = SUPERBLOCK_MAGIC
    for name in ("generation", "file_length", "catalog_offset", "catalog_length",
                 "catalog_crc", "slot", "commit_time_ns"):
        rec[name] = getattr(sb, name)
    raw = bytearray(rec.tobytes())
    raw[60:64] = crc32(raw[:60]).to_bytes(4, "little")
    return bytes(raw)


def decode_superblock(raw: bytes, slot: int) -> Superblock | None:
    """Return the superblock in ``raw``, or None when the slot is not valid.

    A slot is valid when its magic and CRC match, it names itself as ``slot``
    and generation g sits in slot (g - 1) mod 2. An invalid slot is not an error by itself: a torn commit leaves
    one, and the other slot then holds the current generation.
    """
    if len(raw) < SUPERBLOCK_DTYPE.itemsize or raw[:8] != SUPERBLOCK_MAGIC:
        return None
    if crc32(raw[:60]) != int.from_bytes(raw[60:64], "little"):
        return None
    rec = np.frombuffer(raw[: SUPERBLOCK_DTYPE.itemsize], dtype=SUPERBLOCK_DTYPE)[0]
    generation = int(rec["generation"])
    if generation == 0 or int(rec["slot"]) != slot or (generation - 1) % 2 != slot:
        return None
    return Superblock(
        generation=int(rec["generation"]),
        file_length=int(rec["file_length"]),
        catalog_offset=int(rec["catalog_offset"]),
        catalog_length=int(rec["catalog_length"]),
        catalog_crc=int(rec["catalog_crc"]),
        slot=slot,
        commit_time_ns=int(rec["commit_time_ns"]),
    )


def choose_superblock(slots: list[Superblock | None], path: str) -> Superblock:
    """The valid slot with the highest generation wins (SPEC.md §3)."""
    valid = [s for s in slots if s is not None]
    if not valid:
        raise CorruptFileError(f"{path!r}: neither superblock slot is valid (both fail magic/CRC)")
    return max(valid, key=lambda s: s.generation)


def align_up(value: int, alignment: int = REGION_ALIGN) -> int:
    return (value + alignment - 1) // alignment * alignment
