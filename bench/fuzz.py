#!/usr/bin/env python
"""Fuzz the image readers: mutated DICOM/PNG/JPEG/TIFF files must only ever give ReadError.

Usage::

    .venv/bin/python bench/fuzz.py --seconds 300 --out runs/fuzz

Seeds are small valid files written here (DICOM in every transfer syntax an encoder exists
for, plus JPEG baseline and deflated DICOM, ACR-NEMA, MONOCHROME1 with a rescale, signed and
multi-frame data; PNG 8/16-bit and RGB, JPEG, TIFF 16-bit multi-page and deflate) and, when present, the small files of
``../shared/data/real`` (at most ``--max-seed-kb`` each). Hypothesis draws mutation plans
(byte flips, interesting values at random or at structurally interesting offsets such as the
Rows/Columns/BitsStored/Pixel Data elements or PNG/JPEG/TIFF size fields, DICOM element
values replaced by other values with the lengths fixed up, transfer-syntax swaps, truncation,
deletion, insertion, duplication, splicing between seeds) and every mutant goes through:

* ``read_header(path)`` (and ``force=True``), ``check_header(meta)``;
* ``read_image(path)`` (and ``force=True`` when the file meta is missing), then the first
  frames of ``iter_frames``;
* ``data.scan.scan_file(path, verify=True)`` (a row must come back, and the scanner must
  not have had to swallow an unexpected exception).

Allowed outcomes are success or :class:`medforensics.errors.ReadError` (``ConfigError`` for
bad arguments). Anything else is a *finding*: the input and the traceback are saved under
``OUT/findings/`` (deduplicated by exception type and location). Each input also has a time
limit (``--timeout``): the fuzzing runs in a worker process watched by this one; a worker that
stays on one input longer, or dies (segfault, out of memory: the worker's address space is
capped by ``--memory-mb``), is killed and restarted, and the input is saved as a ``hang-`` or
``crash-`` finding. Successful reads are also checked: float32 2-D pixels of the header's size,
and the header-only path must not refuse a file that reads fine.

At the end a summary (run length, inputs tried, outcome counts, findings) is printed and
written to ``OUT/summary.json``. Exit code 1 when there are findings. ``--replay FILE...``
runs the targets once on saved inputs (e.g. ``OUT/findings/*.bin``) to check a fix.

This is a separate command, not a test: it runs for as long as it is told to.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REAL = REPO.parent / "shared" / "data" / "real"

# ------------------------------------------------------------------------------ seeds


def _seed_dataset(rows: int, cols: int, bits: int, *, signed: bool = False,
                  photometric: str = "MONOCHROME2", frames: int = 1, seed: int = 0) -> Any:
    import numpy as np
    from pydicom import uid
    from pydicom.dataset import Dataset, FileMetaDataset

    rng = np.random.default_rng(seed)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.SOPClassUID = uid.DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.7{seed}"
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.8.498.8{seed}"
    ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.8.498.9{seed}"
    ds.Modality = "DX"
    ds.Manufacturer = "Fuzz Imaging"
    ds.ManufacturerModelName = "Seed 1"
    ds.DeviceSerialNumber = "F-1"
    ds.PatientID = "FUZZ"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    dtype = np.dtype(f"{'i' if signed else 'u'}{1 if bits <= 8 else 2}")
    shape = (rows, cols) if frames == 1 else (frames, rows, cols)
    ds.set_pixel_data(rng.integers(lo, hi, shape, endpoint=True).astype(dtype), photometric,
                      bits)
    return ds


def _to_bytes(ds: Any, **kw: Any) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True, **kw)
    return buf.getvalue()


def make_seeds(out: Path, real: Path | None, max_bytes: int) -> list[Path]:
    """Write the seed files into ``out``; returns their paths (sorted)."""
    import numpy as np
    from PIL import Image as PILImage
    from pydicom import uid
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_encoder

    out.mkdir(parents=True, exist_ok=True)
    seeds: dict[str, bytes] = {}
    seeds["explicit-le-12bit.dcm"] = _to_bytes(_seed_dataset(40, 48, 12))
    ds = _seed_dataset(32, 40, 16, signed=True, seed=1)
    ds.file_meta.TransferSyntaxUID = uid.ImplicitVRLittleEndian
    seeds["implicit-le-signed16.dcm"] = _to_bytes(ds)
    ds = _seed_dataset(32, 40, 10, photometric="MONOCHROME1", seed=2)
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = "0.5", "-100", "US"
    seeds["mono1-rescale.dcm"] = _to_bytes(ds)
    ds = _seed_dataset(16, 24, 12, frames=3, seed=3)
    seeds["multiframe-3.dcm"] = _to_bytes(ds)
    ds = _seed_dataset(32, 32, 8, seed=4)
    seeds["explicit-8bit.dcm"] = _to_bytes(ds)
    ds = _seed_dataset(32, 40, 12, seed=5)
    arr = ds.pixel_array
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRBigEndian
    ds.PixelData = arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    seeds["explicit-be.dcm"] = _to_bytes(ds)
    ds = _seed_dataset(32, 40, 12, seed=6)
    ds.compress(uid.RLELossless)
    seeds["rle.dcm"] = _to_bytes(ds)
    if get_encoder(uid.JPEG2000Lossless).is_available:
        ds = _seed_dataset(32, 40, 12, seed=7)
        ds.compress(uid.JPEG2000Lossless)
        seeds["j2k-lossless.dcm"] = _to_bytes(ds)
    ds = _seed_dataset(32, 40, 8, seed=8)
    jpg = io.BytesIO()
    PILImage.fromarray(ds.pixel_array).save(jpg, format="JPEG", quality=90)
    ds.file_meta.TransferSyntaxUID = uid.JPEGBaseline8Bit
    ds.PixelData = encapsulate([jpg.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    seeds["jpeg-baseline.dcm"] = _to_bytes(ds)
    ds = _seed_dataset(24, 24, 12, seed=9)
    ds.file_meta.TransferSyntaxUID = uid.DeflatedExplicitVRLittleEndian
    seeds["deflated.dcm"] = _to_bytes(ds)
    ds = _seed_dataset(24, 24, 12, seed=10)
    del ds.file_meta
    import pydicom

    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, implicit_vr=True, little_endian=True)
    seeds["acr-nema.dcm"] = buf.getvalue()
    rng = np.random.default_rng(11)
    for name, arr, fmt, kw in (
        ("grey8.png", rng.integers(0, 256, (24, 32)).astype(np.uint8), "PNG", {}),
        ("grey16.png", rng.integers(0, 65536, (24, 32)).astype(np.uint16), "PNG", {}),
        ("grey.jpg", rng.integers(0, 256, (24, 32)).astype(np.uint8), "JPEG", {"quality": 85}),
        ("rgb.png", rng.integers(0, 256, (16, 16, 3)).astype(np.uint8), "PNG", {}),
    ):
        b = io.BytesIO()
        PILImage.fromarray(arr).save(b, format=fmt, **kw)
        seeds[name] = b.getvalue()
    import tifffile

    b = io.BytesIO()
    tifffile.imwrite(b, rng.integers(0, 4096, (2, 16, 20)).astype(np.uint16))
    seeds["grey16-2pages.tif"] = b.getvalue()
    b = io.BytesIO()
    tifffile.imwrite(b, rng.integers(0, 256, (16, 20)).astype(np.uint8),
                     compression="zlib")  # LZW would need the imagecodecs package
    seeds["grey8-deflate.tif"] = b.getvalue()
    for name, data in seeds.items():
        (out / name).write_bytes(data)
    if real is not None and real.is_dir():
        series_taken: set[Path] = set()
        for p in sorted(real.rglob("*")):
            if not p.is_file() or p.stat().st_size > max_bytes or p.parent in series_taken:
                continue
            if p.parent.parent.name == "mr":  # one image per MR series is enough
                series_taken.add(p.parent)
            shutil.copyfile(p, out / f"real-{p.parent.name}-{p.name}")
    return sorted(out.iterdir())


# ------------------------------------------------------------------------------ mutations

INTERESTING = [
    b"\x00", b"\xff", b"\x7f", b"\x80", b"\x00\x00", b"\xff\xff", b"\x01\x00", b"\x00\x80",
    b"\xff\x7f", b"\x08\x00", b"\x0c\x00", b"\x10\x00", b"\x20\x00", b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\x00\x00\x01\x00",
    b"\x01\x00\x00\x00", b"OB", b"OW", b"SQ", b"UN", b"UT", b"US", b"SS", b"LO", b"DS", b"XX",
    b"\x00\x00", b"\xfe\xff\x00\xe0", b"\xfe\xff\xdd\xe0", b"\xfe\xff\x0d\xe0",
    b"\xe0\x7f\x10\x00", b"\x28\x00\x10\x00", b"\xff\xd8", b"\xff\xd9", b"\xff\xc0",
    b"\xff\x4f\xff\x51", b"IHDR", b"IDAT", b"IEND",
]

#: Element values for structure-aware mutations (set as a DICOM element's value).
VALUES = [
    b"", b"0", b"1", b"-1", b"65535", b"4294967296", b"1e308", b"-1e308", b"NaN", b"inf",
    b"0.0", b"1\\2\\3", b"MONOCHROME1", b"MONOCHROME2", b"RGB", b"PALETTE COLOR",
    b"YBR_FULL_422", b"\x00\x00", b"\xff\xff", b"\x00\x01", b"\x01\x00", b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff", b"\x10\x00\x10\x00", b"1.2.840.10008.1.2", b"1.2.840.10008.1.2.1",
    b"1.2.840.10008.1.2.2", b"1.2.840.10008.1.2.5", b"1.2.840.10008.1.2.4.50",
    b"1.2.840.10008.1.2.4.51", b"1.2.840.10008.1.2.4.57", b"1.2.840.10008.1.2.4.70",
    b"1.2.840.10008.1.2.4.80", b"1.2.840.10008.1.2.4.81", b"1.2.840.10008.1.2.4.90",
    b"1.2.840.10008.1.2.4.91", b"1.2.840.10008.1.2.4.201", b"1.2.840.10008.1.2.1.99",
    b"1.2.840.10008.5.1.4.1.1.88.11", b"1.2.3.4.5.6.7.8.9", b"ISO_IR 192", b"ISO 2022 IR 87",
    b"\xc3\x28\xa0\xa1",
]

#: DICOM tags (little-endian bytes) whose values are worth mutating.
DICOM_TAGS = [
    (0x0002, 0x0010), (0x0002, 0x0000), (0x0008, 0x0005), (0x0008, 0x0016),
    (0x0028, 0x0002), (0x0028, 0x0004), (0x0028, 0x0008), (0x0028, 0x0010),
    (0x0028, 0x0011), (0x0028, 0x0100), (0x0028, 0x0101), (0x0028, 0x0102),
    (0x0028, 0x0103), (0x0028, 0x1052), (0x0028, 0x1053), (0x0028, 0x2110),
    (0x0028, 0x3000), (0x7FE0, 0x0010), (0xFFFE, 0xE000), (0xFFFE, 0xE0DD),
]
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
             b"UT", b"UV"}


def interesting_offsets(data: bytes) -> list[int]:
    """Offsets of structurally interesting fields of a seed (DICOM tags, PNG/JPEG/TIFF sizes)."""
    offs: set[int] = set()
    for g, e in DICOM_TAGS:
        pat = struct.pack("<HH", g, e)
        start = 0
        while (i := data.find(pat, start)) >= 0 and len(offs) < 400:
            offs.add(i)
            start = i + 1
    for pat in (b"IHDR", b"IDAT", b"\xff\xc0", b"\xff\xc1", b"\xff\xc2", b"\xff\xc3",
                b"\xff\xc4", b"\xff\xda", b"\xff\xdb", b"\x00\x01\x03\x00", b"\x01\x01\x03\x00",
                b"\x02\x01\x03\x00", b"\x11\x01\x04\x00", b"\x17\x01\x04\x00"):
        start = 0
        while (i := data.find(pat, start)) >= 0 and len(offs) < 600:
            offs.add(i)
            start = i + 1
    return sorted(offs)


def _set_element_value(data: bytes, off: int, value: bytes) -> bytes:
    """Replace the value of the explicit-VR element whose tag starts at ``off``.

    Lengths are fixed up (the element's, and the file meta group length for group 2), so
    the result parses as far as the structure goes; implicit VR falls back to a raw write.
    """
    if off + 8 > len(data):
        return data
    vr = data[off + 4 : off + 6]
    if len(value) % 2:
        value += b" " if value[-1:].isalnum() else b"\x00"
    if vr.isalpha() and vr.isupper():
        if vr in _LONG_VRS:
            head, n = 12, struct.unpack("<I", data[off + 8 : off + 12])[0]
            new_len = struct.pack("<I", len(value))
            lpos = off + 8
        else:
            head, n = 8, struct.unpack("<H", data[off + 6 : off + 8])[0]
            new_len = struct.pack("<H", min(len(value), 0xFFFF))
            lpos = off + 6
    else:  # implicit VR: 4-byte length after the tag
        head, n = 8, struct.unpack("<I", data[off + 4 : off + 8])[0]
        new_len = struct.pack("<I", len(value))
        lpos = off + 4
    if n == 0xFFFFFFFF or off + head + n > len(data):
        n = 0
    out = data[:lpos] + new_len + data[lpos + len(new_len) : off + head] + value + \
        data[off + head + n :]
    if data[off : off + 2] == b"\x02\x00":  # keep the file meta group length consistent
        gl = out.find(b"\x02\x00\x00\x00UL\x04\x00")
        if 0 <= gl < off:
            old = struct.unpack("<I", out[gl + 8 : gl + 12])[0]
            fixed = min(0xFFFFFFFF, max(0, old + len(value) - n))
            out = out[: gl + 8] + struct.pack("<I", fixed) + out[gl + 12 :]
    return out


def apply_mutations(data: bytes, muts: list[tuple], seeds: list[bytes],
                    offsets: list[int]) -> bytes:
    """Apply a Hypothesis-drawn mutation plan to ``data`` (positions taken modulo length)."""
    buf = bytearray(data)
    for m in muts:
        kind = m[0]
        n = len(buf)
        if kind == "truncate":
            del buf[(m[1] % (n + 1)):]
        elif n == 0:
            buf += m[-1] if isinstance(m[-1], bytes) else b"\x00"
        elif kind == "flip":
            buf[m[1] % n] ^= 1 << (m[2] % 8)
        elif kind == "byte":
            buf[m[1] % n] = m[2] % 256
        elif kind == "interesting":
            pos = m[1] % n
            buf[pos : pos + len(m[2])] = m[2]
        elif kind == "at-field" and offsets:
            pos = (offsets[m[1] % len(offsets)] + m[2]) % max(1, n)
            buf[pos : pos + len(m[3])] = m[3]
        elif kind == "set-value" and offsets:
            buf = bytearray(_set_element_value(bytes(buf), offsets[m[1] % len(offsets)], m[2]))
        elif kind == "delete":
            pos = m[1] % n
            del buf[pos : pos + m[2]]
        elif kind == "insert":
            pos = m[1] % (n + 1)
            buf[pos:pos] = m[2]
        elif kind == "duplicate":
            pos = m[1] % n
            chunk = bytes(buf[pos : pos + m[2]])
            at = m[3] % (n + 1)
            buf[at:at] = chunk
        elif kind == "splice" and seeds:
            other = seeds[m[1] % len(seeds)]
            if other:
                cut = m[2] % (n + 1)
                ocut = m[3] % len(other)
                buf = buf[:cut] + bytearray(other[ocut:])
    return bytes(buf)


def mutation_strategy(n_seeds: int) -> Any:
    from hypothesis import strategies as st

    pos = st.integers(0, 2**31 - 1)
    one = st.one_of(
        st.tuples(st.just("flip"), pos, st.integers(0, 7)),
        st.tuples(st.just("byte"), pos, st.integers(0, 255)),
        st.tuples(st.just("interesting"), pos, st.sampled_from(INTERESTING)),
        st.tuples(st.just("at-field"), pos, st.integers(0, 16), st.sampled_from(INTERESTING)),
        st.tuples(st.just("set-value"), pos, st.sampled_from(VALUES) | st.binary(max_size=24)),
        st.tuples(st.just("truncate"), pos),
        st.tuples(st.just("delete"), pos, st.integers(1, 64)),
        st.tuples(st.just("insert"), pos, st.binary(min_size=1, max_size=32)),
        st.tuples(st.just("duplicate"), pos, st.integers(1, 512), pos),
        st.tuples(st.just("splice"), st.integers(0, max(0, n_seeds - 1)), pos, pos),
    )
    return st.lists(one, min_size=1, max_size=6)


# ------------------------------------------------------------------------------ targets


class _TimeUp(Exception):
    """Raised inside the Hypothesis loop when the worker's time is over."""


class _Findings:
    """Saves the first few inputs per finding signature under ``OUT/findings``."""

    def __init__(self, root: Path, send: Any, current: Path) -> None:
        self.current = current
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.count: Counter = Counter()
        self.send = send

    def add(self, kind: str, target: str, exc: BaseException | None, data: bytes,
            detail: str = "") -> None:
        where = ""
        if exc is not None:
            tb = traceback.extract_tb(exc.__traceback__)
            inner = [f for f in tb if "/medforensics/" in f.filename] or tb
            last = inner[-1] if inner else None
            where = f"{Path(last.filename).name}:{last.lineno}" if last else "?"
        detail = detail.replace(str(self.current), "<input>")
        sig = f"{kind}:{target}:{type(exc).__name__ if exc else detail}:{where}"
        self.count[sig] += 1
        if self.count[sig] <= 3:
            digest = hashlib.sha256(data).hexdigest()[:12]
            stem = f"{kind}-{target}-{type(exc).__name__ if exc else 'check'}-{digest}"
            (self.root / f"{stem}.bin").write_bytes(data)
            text = detail + "\n" + ("".join(traceback.format_exception(exc)) if exc else "")
            (self.root / f"{stem}.txt").write_text(text)
            self.send("F " + json.dumps({"signature": sig, "file": f"{stem}.bin",
                                          "message": (str(exc) if exc else detail)[:300]}))


def run_targets(path: Path, data: bytes, findings: _Findings) -> str:
    """Run every target on one input; returns the outcome label (``ok`` or a reason)."""
    import logging
    from itertools import islice

    import numpy as np

    from medforensics.data.scan import scan_file
    from medforensics.errors import ConfigError, MissingFileMetaError, ReadError
    from medforensics.io import check_header, iter_frames, read_header, read_image

    allowed = (ReadError, ConfigError)
    header_ok: dict[bool, bool] = {}
    for force in (False, True):
        try:
            meta = read_header(path, force=force)
            check_header(meta)
            header_ok[force] = True
        except allowed:
            header_ok[force] = False
        except Exception as exc:  # noqa: BLE001 - that is what we look for
            findings.add("exception", f"read_header(force={force})", exc, data)
            header_ok[force] = False

    outcome = "?"
    for force in (False, True):
        try:
            img = read_image(path, force=force)
        except MissingFileMetaError as exc:
            outcome = exc.reason
            continue  # try again with force=True
        except allowed as exc:
            outcome = exc.reason if isinstance(exc, ReadError) else "config-error"
            break
        except Exception as exc:  # noqa: BLE001
            findings.add("exception", f"read_image(force={force})", exc, data)
            outcome = "EXCEPTION"
            break
        p, meta = img.pixels, img.meta
        if not (isinstance(p, np.ndarray) and p.dtype == np.float32 and p.ndim == 2
                and p.shape == (meta.rows, meta.cols)):
            findings.add("contract", "read_image", None, data,
                         f"pixels {getattr(p, 'dtype', None)} {getattr(p, 'shape', None)} vs "
                         f"header {meta.rows}x{meta.cols}")
        if not np.isfinite(p).all():
            findings.add("contract", "read_image-nonfinite", None, data,
                         "non-finite pixel values")
        if not header_ok.get(force, True):
            findings.add("inconsistent", "header-refuses-readable-file", None, data,
                         f"read_image(force={force}) succeeds but read_header/check_header "
                         "refuse the file")
        outcome = "ok" if not force else "ok-force"
        try:
            for frame in islice(iter_frames(path, force=force), 3):
                if frame.pixels.ndim != 2:
                    findings.add("contract", "iter_frames", None, data, "frame not 2-D")
        except allowed:
            pass
        except Exception as exc:  # noqa: BLE001
            findings.add("exception", "iter_frames", exc, data)
        break

    class _Catch(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            if "unexpected" in record.getMessage():
                self.messages.append(record.getMessage())

    catch = _Catch()
    mlog = logging.getLogger("medforensics.data.manifest")
    mlog.addHandler(catch)
    try:
        row = scan_file(path, verify=True)
        if not isinstance(row, dict) or "status" not in row:
            findings.add("contract", "scan_file", None, data, f"bad row {row!r}")
    except Exception as exc:  # noqa: BLE001 - scan_file must never raise
        findings.add("exception", "scan_file", exc, data)
    finally:
        mlog.removeHandler(catch)
    for msg in catch.messages:
        findings.add("swallowed", "scan_file", None, data, msg)
    return outcome


def worker(args: argparse.Namespace) -> int:
    """Fuzz until the deadline, reporting each input on the pipe ``args.fd``."""
    import logging
    import resource
    import warnings

    from hypothesis import HealthCheck, Phase, given, seed, settings

    logging.getLogger("pydicom").setLevel(logging.CRITICAL)  # decoder tracebacks at ERROR
    warnings.simplefilter("ignore")
    if args.memory_mb:
        limit = args.memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    pipe = os.fdopen(args.fd, "w", buffering=1)

    def send(line: str) -> None:
        pipe.write(line.replace("\n", " ") + "\n")
        pipe.flush()

    work = Path(args.out)
    seeds = [p.read_bytes() for p in sorted((work / "seeds").iterdir())]
    offsets = [interesting_offsets(s) for s in seeds]
    current = work / f"current-{os.getpid()}.bin"
    findings = _Findings(work / "findings", send, current)
    deadline = time.monotonic() + args.seconds
    counter = [0]

    from hypothesis import strategies as st

    @seed(args.seed)
    @settings(max_examples=10**9, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False,
              print_blob=False)
    @given(idx=st.integers(0, len(seeds) - 1), muts=mutation_strategy(len(seeds)))
    def one(idx: int, muts: list[tuple]) -> None:
        if time.monotonic() > deadline:
            raise _TimeUp
        data = apply_mutations(seeds[idx], muts, seeds, offsets[idx])
        current.write_bytes(data)
        counter[0] += 1
        send(f"B {counter[0]} {idx}")
        t0 = time.monotonic()
        outcome = run_targets(current, data, findings)
        send(f"E {counter[0]} {outcome} {time.monotonic() - t0:.3f}")

    why = "hypothesis stopped generating"
    try:
        one()
    except _TimeUp:
        why = "time"
    send(f"D {counter[0]} {why}")
    current.unlink(missing_ok=True)
    return 0


# ------------------------------------------------------------------------------ supervisor


def supervise(args: argparse.Namespace) -> dict[str, Any]:
    """Run workers until ``args.seconds`` are used; kill and restart on hangs and crashes."""
    out = Path(args.out)
    seeds = make_seeds(out / "seeds", None if args.no_real else Path(args.real), args.max_seed_kb
                       * 1024)
    (out / "findings").mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    deadline = start + args.seconds
    outcomes: Counter = Counter()
    findings: list[dict] = []
    hangs = crashes = restarts = inputs = 0
    slow: list[tuple[float, str]] = []
    ends: list[str] = []
    worker_seed = args.seed
    log = open(out / "worker.log", "ab")  # noqa: SIM115 - closed below
    try:
        while time.monotonic() < deadline - 1:
            remaining = deadline - time.monotonic()
            r, w = os.pipe()
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--fd", str(w),
                   "--out", str(out), "--seed", str(worker_seed), "--seconds", f"{remaining:.1f}",
                   "--memory-mb", str(args.memory_mb)]
            env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                       MKL_NUM_THREADS="1")
            proc = subprocess.Popen(cmd, pass_fds=(w,), stdout=log, stderr=log, env=env)
            os.close(w)
            pending = b""
            n_ends = len(ends)
            current: tuple[int, float] | None = None
            last_event = time.monotonic()  # worker start, then each line it sends
            while True:
                # an input gets --timeout; between inputs (start-up, Hypothesis) 120 s
                limit = args.timeout if current is not None else 120.0
                since = time.monotonic() - (current[1] if current else last_event)
                ready, _, _ = select.select([r], [], [], max(0.0, limit - since))
                if not ready:
                    if current is None:
                        ends.append("worker silent for 120 s between inputs: killed")
                    else:
                        hangs += 1
                        data = (out / f"current-{proc.pid}.bin").read_bytes()
                        name = f"hang-{hashlib.sha256(data).hexdigest()[:12]}.bin"
                        (out / "findings" / name).write_bytes(data)
                        findings.append({"signature": "hang", "file": name,
                                         "message": f"no answer within {args.timeout} s"})
                    proc.kill()
                    proc.wait()
                    break
                chunk = os.read(r, 65536)
                if not chunk:
                    rc = proc.wait()
                    if len(ends) == n_ends:
                        ends.append(f"worker exited (rc={rc}) between inputs: see worker.log")
                    if current is not None:
                        crashes += 1
                        cur = out / f"current-{proc.pid}.bin"
                        data = cur.read_bytes() if cur.exists() else b""
                        name = f"crash-rc{rc}-{hashlib.sha256(data).hexdigest()[:12]}.bin"
                        (out / "findings" / name).write_bytes(data)
                        findings.append({"signature": f"crash rc={rc}", "file": name,
                                         "message": "worker died on this input"})
                    break
                pending += chunk
                last_event = time.monotonic()
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", "replace")
                    if line.startswith("B "):
                        current = (int(line.split()[1]), time.monotonic())
                    elif line.startswith("E "):
                        _, _n, outcome, secs = line.split(maxsplit=3)
                        outcomes[outcome] += 1
                        inputs += 1
                        if float(secs) > 2.0:
                            slow.append((float(secs), outcome))
                        current = None
                    elif line.startswith("F "):
                        findings.append(json.loads(line[2:]))
                    elif line.startswith("D "):
                        ends.append(line[2:])
            os.close(r)
            for stale in out.glob("current-*.bin"):
                stale.unlink(missing_ok=True)
            worker_seed += 1
            restarts += 1
    finally:
        log.close()
    by_sig = Counter(f["signature"] for f in findings)
    summary = {
        "seconds": round(time.monotonic() - start, 1),
        "inputs": inputs,
        "inputs_per_second": round(inputs / max(1e-9, time.monotonic() - start), 1),
        "seeds": [p.name for p in seeds],
        "workers_started": restarts,
        "worker_ends": ends,
        "per_input_timeout_s": args.timeout,
        "memory_limit_mb": args.memory_mb,
        "hangs": hangs,
        "crashes": crashes,
        "outcomes": dict(outcomes.most_common()),
        "slowest_inputs_s": sorted(slow, reverse=True)[:5],
        "findings": [{"signature": s, "count": n,
                      "example": next(f for f in findings if f["signature"] == s)}
                     for s, n in by_sig.most_common()],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def replay(files: list[Path]) -> int:
    """Run the targets on saved inputs; prints each outcome and finding. Exit 1 on findings."""
    import tempfile

    n_found = 0
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:
            data = f.read_bytes()
            copy = Path(tmp) / "input.bin"
            copy.write_bytes(data)
            found: list[str] = []
            outcome = run_targets(copy, data, _Findings(Path(tmp) / "findings",
                                                        found.append, copy))
            n_found += len(found)
            print(f"{f}: {outcome}")
            for line in found:
                rec = json.loads(line[2:])
                print(f"  FINDING {rec['signature']}: {rec['message']}")
    return 1 if n_found else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="Total fuzzing time.")
    p.add_argument("--timeout", type=float, default=20.0, help="Time limit per input (s).")
    p.add_argument("--out", default="runs/fuzz", help="Work folder (seeds, findings, summary).")
    p.add_argument("--seed", type=int, default=0, help="Hypothesis seed of the first worker.")
    p.add_argument("--real", default=str(DEFAULT_REAL), help="Folder of real seed files.")
    p.add_argument("--no-real", action="store_true", help="Generated seeds only.")
    p.add_argument("--max-seed-kb", type=int, default=256, help="Largest real seed file (KiB).")
    p.add_argument("--memory-mb", type=int, default=3072,
                   help="Address-space limit of the worker (MiB; 0: none).")
    p.add_argument("--replay", nargs="+", metavar="FILE",
                   help="Run the targets on these files (e.g. saved findings) and print what "
                   "happens; no fuzzing.")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--fd", type=int, default=-1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.timeout <= 0:
        p.error("--seconds and --timeout must be positive")
    if args.worker:
        return worker(args)
    if args.replay:
        return replay([Path(f) for f in args.replay])
    signal.signal(signal.SIGINT, signal.default_int_handler)
    summary = supervise(args)
    print(json.dumps({k: v for k, v in summary.items() if k != "seeds"}, indent=1))
    print(f"{summary['inputs']} inputs in {summary['seconds']} s; "
          f"{len(summary['findings'])} finding signature(s); details in {args.out}")
    return 1 if summary["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
