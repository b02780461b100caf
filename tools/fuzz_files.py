"""Seeded fuzzer of hostile files: every damaged file opens or raises NeedleError.

    python tools/fuzz_files.py [--cases 10000] [--seed 0] [--save-findings]
    python tools/fuzz_files.py --make-corpus     # rewrite format/fuzz/ (hand-made hostile files)

Case ``i`` of seed ``s`` is a pure function of (s, i): it picks a base file
(the golden files of format/golden and a larger multi-generation file built
here) and one mutation:

- ``bits``: flip 1-8 random bits anywhere;
- ``splice``: overwrite 1-4 words inside one region of the current generation
  with hostile integers (0, -1, n, 2^31, 2^63, ...), with or without fixing
  that region's CRC in the catalog (the CRC is checked by ``verify``, not on
  every open, so the code behind it must cope either way);
- ``field``: replace one field of the catalog (JSON) with a hostile value
  (huge or negative numbers, wrong types, offsets past the end, dim 0, ...),
  re-encoded with correct CRCs so the validation behind the CRC is what
  answers;
- ``cut``: truncate the file at a random length.

Each mutated file is opened read-only and used (count, find, get, HNSW,
exact and batched search, a filter) and checked with ``verify``; then a copy
is opened for writing and written to (insert, upsert, delete, update, save,
compact), because writers read the file's structures too (a writer extends
the graph and merges metadata columns that came from the file). The only
acceptable outcomes are success and a ``NeedleError``; anything else — a
signal, a hang (no progress for 20 s), or another exception — is a finding.
Cases run in a child process, restarted after a crash. Findings are saved
to ``format/fuzz/`` (``--save-findings``) and replayed by the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CORPUS = ROOT / "format" / "fuzz"
GOLDEN = ROOT / "format" / "golden"
HOSTILE_INTS = [0, 1, -1, 2, 3, 7, 255, 2**15, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**53, 2**63 - 1, 2**63,
                2**64 - 1, -(2**63), 10**30]
HOSTILE_VALUES = HOSTILE_INTS + [None, "", "x" * 300, [], {}, 1.5, -0.0, True, [0, 0, 0, 0]]
# No output for this long means a hang: far above any case's time on a loaded
# 2-core machine (cases take ~0.1-1 s), so only a real hang crosses it.
HANG_SECONDS = 300.0


def make_base(path: str) -> None:
    """A file with upper HNSW layers, deletes, upserts and two generations."""
    import needle_mm as needle

    rng = np.random.default_rng(7)
    with needle.Database.open(path) as db:
        c = db.create_collection("c", 8, "euclidean", m=4)
        c.insert_many([f"r{i}" for i in range(300)], rng.normal(size=(300, 8)),
                      [{"i": i, "category": ["books", "music"][i % 2], "tags": ["a", "b"][: i % 3]}
                       for i in range(300)])
        db.create_collection("d", 3, "cosine").insert_many(["x", "y"], np.eye(3)[:2])
    with needle.Database.open(path) as db:
        c = db.collection("c")
        c.delete([f"r{i}" for i in range(0, 300, 7)])
        c.upsert("r1", rng.normal(size=8), {"i": 1, "upserted": True})
        c.insert_many([f"s{i}" for i in range(40)], rng.normal(size=(40, 8)))


def bases(work: str) -> list[bytes]:
    out = [(GOLDEN / name).read_bytes() for name in ("basic.needle", "deletes.needle", "empty.needle",
                                                     "sparse.needle", "half.needle")]
    big = os.path.join(work, "base.needle")
    if not os.path.exists(big):
        make_base(big)
    out.append(Path(big).read_bytes())
    return out


# ----------------------------------------------------------------- file surgery


def current(data: bytes):
    """(superblock, catalog dict) of the current generation, or None if unreadable."""
    from needle_mm._format.header import SUPERBLOCK_DTYPE, SUPERBLOCK_OFFSETS, choose_superblock, decode_superblock

    try:
        slots = [decode_superblock(bytes(data[o:o + SUPERBLOCK_DTYPE.itemsize]), i)
                 for i, o in enumerate(SUPERBLOCK_OFFSETS)]
        sb = choose_superblock(slots, "fuzz")
        return sb, json.loads(bytes(data[sb.catalog_offset:sb.catalog_offset + sb.catalog_length]))
    except Exception:
        return None


def with_catalog(data: bytes, sb, catalog: dict) -> bytes:
    """``data`` with ``catalog`` appended and the current superblock pointing at it (valid CRCs)."""
    from needle_mm._format.header import SUPERBLOCK_OFFSETS, Superblock, align_up, crc32, encode_superblock

    if isinstance(catalog, dict) and type(catalog.get("catalog_reserved")) is int:
        # the catalog owns exactly the bytes it uses (SPEC §6.1): a fixed point of its own length
        catalog["catalog_reserved"] = 0
        while len(json.dumps(catalog, separators=(",", ":"))) != catalog["catalog_reserved"]:
            catalog["catalog_reserved"] = len(json.dumps(catalog, separators=(",", ":")))
    raw = json.dumps(catalog, separators=(",", ":")).encode()  # json: integers beyond 64 bits too
    offset = align_up(len(data))
    out = bytearray(data) + b"\0" * (offset - len(data)) + raw
    new = Superblock(sb.generation, len(out), offset, len(raw), crc32(raw), sb.slot, sb.commit_time_ns)
    base = SUPERBLOCK_OFFSETS[sb.slot]
    out[base:base + 64] = encode_superblock(new)
    return bytes(out)


def leaves(obj, path=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, path + (k,))
    elif isinstance(obj, list) and obj and not all(isinstance(x, int) for x in obj):
        for i, v in enumerate(obj):
            yield from leaves(v, path + (i,))
    else:
        yield path
    if isinstance(obj, list) and obj and all(isinstance(x, int) for x in obj):  # region refs: mutate one field
        for i in range(len(obj)):
            yield path + (i,)


def set_path(obj, path, value):
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


def regions(catalog: dict) -> list[tuple[list, int, int]]:
    """(ref list, offset, length) of every region of the current catalog."""
    out = []
    for coll in catalog.get("collections", []):
        for seg in coll.get("segments", []):
            for ref in seg.get("regions", {}).values():
                if isinstance(ref, list) and len(ref) == 4 and ref[1] > 0:
                    out.append((ref, ref[0], ref[1]))
    return out


def mutate(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    from needle_mm._format.header import crc32

    kind = ["bits", "splice", "field", "cut"][int(rng.integers(4))]
    parsed = current(data)
    if kind in ("splice", "field") and parsed is None:
        kind = "bits"
    if kind == "bits":
        out = bytearray(data)
        for _ in range(int(rng.integers(1, 9))):
            pos = int(rng.integers(len(out)))
            out[pos] ^= 1 << int(rng.integers(8))
        return kind, bytes(out)
    if kind == "cut":
        return kind, data[: int(rng.integers(len(data)))]
    sb, catalog = parsed
    if kind == "splice":
        found = regions(catalog)
        if not found:
            return mutate(data, rng)
        ref, offset, length = found[int(rng.integers(len(found)))]
        out = bytearray(data)
        for _ in range(int(rng.integers(1, 5))):
            width = [4, 8][int(rng.integers(2))]
            if length < width:
                continue
            pos = offset + int(rng.integers(0, length - width + 1)) // width * width
            value = HOSTILE_INTS[int(rng.integers(len(HOSTILE_INTS)))]
            out[pos:pos + width] = (value % (1 << (8 * width))).to_bytes(width, "little")
        if rng.random() < 0.5:  # fix the region's CRC so only structural checks stand in the way
            ref[2] = crc32(bytes(out[offset:offset + length]))
            return "splice+crc", with_catalog(bytes(out), sb, catalog)
        return kind, bytes(out)
    paths = list(leaves(catalog))
    path = paths[int(rng.integers(len(paths)))]
    value = HOSTILE_VALUES[int(rng.integers(len(HOSTILE_VALUES)))]
    set_path(catalog, path, value)
    return f"field {'.'.join(map(str, path))}={str(value)[:20]}", with_catalog(data, sb, catalog)


# ----------------------------------------------------------------- exercising a file


def exercise(path: str) -> str:
    """'ok', 'error: ...' (a NeedleError), or 'unhandled: ...' (a finding)."""
    import needle_mm as needle
    from needle_mm.ops.verify import verify_file

    outcome = "ok"
    try:
        with needle.Database.open(path, read_only=True) as db:
            for name in db.list_collections():
                c = db.collection(name)
                c.count()
                found = c.find(limit=30)
                for i, meta in found[:5]:
                    c.get(i)
                if c.sparse:
                    q = {"indices": list(range(0, min(c.dimension, 1000), 3)), "values": [1.0] * 334}
                    q["values"] = q["values"][: len(q["indices"])]
                    c.search(q, 5)
                    c.search_batch([q] * 5, 3)
                else:
                    q = np.random.default_rng(0).normal(size=c.dimension).astype(np.float32)
                    c.search(q, 5)
                    c.search(q, 5, exact=True)
                    c.search_batch(np.stack([q] * 5), 3)
                c.count({"category": "books"})
    except needle.NeedleError as exc:
        outcome = f"error: {type(exc).__name__}"
    except Exception as exc:  # noqa: BLE001 - anything else is what the fuzzer looks for
        return f"unhandled: {type(exc).__name__}: {exc}"[:300]
    try:
        verify_file(path)
    except needle.NeedleError:
        pass
    except Exception as exc:  # noqa: BLE001
        return f"unhandled in verify: {type(exc).__name__}: {exc}"[:300]
    written = exercise_writes(path)
    return written if written.startswith("unhandled") else outcome


def exercise_writes(path: str) -> str:
    """Write to a copy of ``path``: 'ok', 'error: ...' or 'unhandled: ...'."""
    import shutil

    import needle_mm as needle
    from needle_mm.ops.rebuild import compact

    copy = path + ".w"
    for leftover in (copy, copy + ".lock"):
        if os.path.exists(leftover):
            os.remove(leftover)
    shutil.copyfile(path, copy)
    rng = np.random.default_rng(1)
    stage = "open"
    try:
        with needle.Database.open(copy, lock_timeout=5) as db:
            for name in db.list_collections():
                c = db.collection(name)
                stage = f"{name}: write"
                found = c.find(limit=3)
                if c.sparse:
                    vectors = [{"indices": [1, 5], "values": [0.5, 2.0]}, {"indices": [0], "values": [1.0]}]
                else:
                    vectors = rng.normal(size=(2, c.dimension)).astype(np.float32)
                c.insert_many([f"fuzz-new-{name}-0", f"fuzz-new-{name}-1"], vectors, [{"category": "books"}, None])
                if found:
                    c.upsert(found[0][0], vectors[0], {"fuzz": 1})
                    c.update_metadata(found[-1][0], {"fuzz": 2})
                    c.delete(found[1][0] if len(found) > 1 else found[0][0])
            stage = "save"
            db.save()
        stage = "compact"
        compact(copy, lock_timeout=5)
        outcome = "ok"
    except needle.NeedleError as exc:
        outcome = f"error: {type(exc).__name__}"
    except Exception as exc:  # noqa: BLE001
        outcome = f"unhandled in writes ({stage}): {type(exc).__name__}: {exc}"[:300]
    for leftover in (copy, copy + ".lock"):
        if os.path.exists(leftover):
            os.remove(leftover)
    return outcome


def child(seed: int, start: int, stop: int, work: str) -> None:
    """Run cases start..stop-1, printing CASE before and RESULT after each."""
    files = bases(work)
    path = os.path.join(work, f"case-{os.getpid()}.needle")
    exercise(os.path.join(work, "base.needle"))  # compile/load the kernels before the clock runs
    print("READY 0 0", flush=True)
    for i in range(start, stop):
        rng = np.random.default_rng([seed, i])
        base = files[int(rng.integers(len(files)))]
        kind, data = mutate(base, rng)
        with open(path, "wb") as f:
            f.write(data)
        print("CASE", i, json.dumps(kind), flush=True)
        print("RESULT", i, json.dumps(exercise(path)), flush=True)


def run(cases: int, seed: int = 0, save_findings: bool = False) -> dict:
    work = tempfile.mkdtemp(prefix="needle-fuzz-")
    bases(work)  # build the shared base once, before children race for it
    counts = {"cases": 0, "ok": 0, "errors": 0, "unhandled": 0, "signals": 0, "hangs": 0}
    findings = []
    i = 0
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    while i < cases:
        err_path = os.path.join(work, "child-stderr.txt")
        with open(err_path, "w") as err:
            proc = subprocess.Popen([sys.executable, __file__, "--child", str(seed), str(i), str(cases), work],
                                    stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        last_case, last_kind, ready, hung = None, "", False, False
        while True:
            if not sel.select(timeout=HANG_SECONDS if ready else 600):
                proc.kill()
                hung = True
                counts["hangs"] += 1
                findings.append((last_case, last_kind, "hang"))
                break
            line = proc.stdout.readline()
            if not line:
                break
            tag, num, payload = line.rstrip("\n").split(" ", 2)
            if tag == "READY":
                ready = True
                continue
            if tag == "CASE":
                last_case, last_kind = int(num), json.loads(payload)
                continue
            result = json.loads(payload)
            counts["cases"] += 1
            if result == "ok":
                counts["ok"] += 1
            elif result.startswith("error"):
                counts["errors"] += 1
            else:
                counts["unhandled"] += 1
                findings.append((int(num), last_kind, result))
            last_case = None
        proc.wait()
        proc.stdout.close()
        if last_case is not None:  # died inside a case
            if hung:
                pass
            elif proc.returncode and proc.returncode < 0:
                counts["signals"] += 1
                findings.append((last_case, last_kind, f"signal {-proc.returncode}"))
            else:
                findings.append((last_case, last_kind, f"child exited {proc.returncode}"))
            counts["cases"] += 1
            i = last_case + 1
        elif proc.returncode != 0:
            raise RuntimeError(f"fuzz child failed outside a case: {Path(err_path).read_text()[-2000:]}")
        else:
            i = cases
    if save_findings:
        files = bases(work)
        CORPUS.mkdir(parents=True, exist_ok=True)
        for case, kind, what in findings:
            rng = np.random.default_rng([seed, case])
            base = files[int(rng.integers(len(files)))]
            _, data = mutate(base, rng)
            (CORPUS / f"finding-s{seed}-c{case}.needle").write_bytes(data)
    counts["findings"] = findings
    return counts


# ----------------------------------------------------------------- hand-made corpus


def make_corpus() -> None:
    """The hand-made hostile files of format/fuzz/, each a structural lie a reader or writer must refuse."""
    work = tempfile.mkdtemp(prefix="needle-corpus-")
    data = bases(work)[3]
    sb, catalog = current(data)
    CORPUS.mkdir(parents=True, exist_ok=True)

    def segment(cat):
        return cat["collections"][0]["segments"][0]

    def save(name, blob):
        (CORPUS / f"{name}.needle").write_bytes(blob)

    cat = json.loads(json.dumps(catalog))
    cat["collections"][0]["dim"] = 0
    save("dim-zero", with_catalog(data, sb, cat))
    cat = json.loads(json.dumps(catalog))
    segment(cat)["regions"]["vectors"][1] = 2**63
    save("length-2-63", with_catalog(data, sb, cat))
    cat = json.loads(json.dumps(catalog))
    segment(cat)["regions"]["hnsw_links0"][0] = len(data) + 4096
    save("offset-past-eof", with_catalog(data, sb, cat))
    cat = json.loads(json.dumps(catalog))
    segment(cat)["n"] = 2**63 - 1
    save("n-2-63", with_catalog(data, sb, cat))
    # a neighbour id equal to n, in layer 0, with the region's CRC fixed
    from needle_mm._format.header import crc32

    cat = json.loads(json.dumps(catalog))
    seg = segment(cat)
    ref = seg["regions"]["hnsw_links0"]
    out = bytearray(data)
    out[ref[0]:ref[0] + 4] = int(seg["n"]).to_bytes(4, "little")
    ref[2] = crc32(bytes(out[ref[0]:ref[0] + ref[1]]))
    save("neighbour-id-n", with_catalog(bytes(out), sb, cat))
    cat = json.loads(json.dumps(catalog))
    seg = segment(cat)
    seg["hnsw"]["entry_point"] = seg["n"]
    save("entry-point-n", with_catalog(data, sb, cat))
    # Found by attacking the write path (each with its region CRC fixed, so
    # the checks behind the CRC must answer): see HOSTILE below. Made from the
    # larger base, whose collection "c" has 300 records and upper layers.
    big = bases(work)[5]
    big_sb, big_catalog = current(big)
    for name, edit in HOSTILE.items():
        cat = json.loads(json.dumps(big_catalog))
        out = bytearray(big)
        edit(out, segment(cat))
        save(name, with_catalog(bytes(out), big_sb, cat))
    print("wrote", sorted(p.name for p in CORPUS.glob("*.needle")))


def _splice(out: bytearray, seg: dict, region: str, at: int, raw: bytes) -> None:
    """Overwrite bytes ``at ..`` of ``region`` and fix the region's CRC in the catalog."""
    from needle_mm._format.header import crc32

    ref = seg["regions"][region]
    out[ref[0] + at:ref[0] + at + len(raw)] = raw
    ref[2] = crc32(bytes(out[ref[0]:ref[0] + ref[1]]))


def _link_of_node0(value):
    return lambda out, seg: _splice(out, seg, "hnsw_links0", 0, int(value(seg)).to_bytes(4, "little", signed=True))


def _zeroed_metadata(out: bytearray, seg: dict, slot: int = 2) -> None:
    """A live record's metadata bytes zeroed, with a CRC that matches the zeros."""
    from needle_mm._format.header import crc32

    offsets = np.frombuffer(bytes(out), dtype="<u8", count=2, offset=seg["regions"]["meta_offsets"][0] + 8 * slot)
    length = int(offsets[1] - offsets[0])
    _splice(out, seg, "meta_blob", int(offsets[0]), bytes(length))
    _splice(out, seg, "meta_crc", 4 * slot, crc32(bytes(length)).to_bytes(4, "little"))


# Hostile files and the error each must raise, reading and writing alike.
HOSTILE = {
    # one high bit of an int32 neighbour id: a writer's graph build read vectors[nb] out of bounds (SIGSEGV)
    "links0-high-bit": _link_of_node0(lambda seg: 1 << 30),
    # slightly out of range: a save used to succeed and verify then passed the grown graph
    "links0-n-plus-100": _link_of_node0(lambda seg: seg["n"] + 100),
    # NaN norms: cosine search never returned (NaN comparisons under fast-math)
    "norms-nan": lambda out, seg: _splice(out, seg, "norms", 0, np.full(3, np.nan, dtype="<f4").tobytes()),
    # zeroed levels: a writer raised numpy's ValueError (broadcast into a 0-row array)
    "levels-zeroed": lambda out, seg: _splice(out, seg, "hnsw_levels", 0, bytes(seg["regions"]["hnsw_levels"][1])),
    # zeroed metadata passing its CRC: a writer raised orjson.JSONDecodeError
    "metadata-zeroed": _zeroed_metadata,
}


def replay() -> dict[str, str]:
    """Outcome of every corpus file (run in a child by the tests)."""
    return {p.name: exercise(str(p)) for p in sorted(CORPUS.glob("*.needle"))}


def replay_writes() -> dict[str, str]:
    """Outcome of writing to a copy of every corpus file."""
    return {p.name: exercise_writes(str(p)) for p in sorted(CORPUS.glob("*.needle"))}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-findings", action="store_true")
    ap.add_argument("--make-corpus", action="store_true")
    a = ap.parse_args()
    if a.make_corpus:
        make_corpus()
        return
    t = time.perf_counter()
    counts = run(a.cases, a.seed, a.save_findings)
    findings = counts.pop("findings")
    print(" ".join(f"{k}={v}" for k, v in counts.items()) + f" seconds={time.perf_counter() - t:.0f}")
    for f in findings:
        print("  ", f)
    sys.exit(1 if findings else 0)


if __name__ == "__main__":
    main()
