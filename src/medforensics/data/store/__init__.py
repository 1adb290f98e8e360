"""Cached training store: decode every image once, then read patches from a memory map.

Decoding DICOM (JPEG 2000, RLE, JPEG-LS, or just parsing) is the slow part of training: a
patch epoch touches every image, often many times. :func:`prepare_store` decodes each eligible
manifest image once, in parallel, into a compact on-disk store; :class:`StoreSource` then serves
whole images and windows from it as an :class:`~medforensics.data.datasets.ImageSource`, so no
training epoch decodes DICOM again and a random patch costs one small memory-mapped read.

Layout (``STORE/``)::

    pixels.bin    one packed blob: every image's values, C order, each entry 64-byte aligned
    index.json    format, per-content entries (shape, dtype, offset), path -> sha256 map,
                  failures of the last prepare, paper-variant settings

Format choice: one memory-mapped blob serves a random patch read faster than one ``.npy`` per
image (the timings are in docs/training.md) and keeps the file count at two for any archive.

Values. Every entry equals ``medforensics.io.read_image(path).pixels`` (frame 0: float32
stored values after the Modality LUT, MONOCHROME1 inverted, no windowing) bit for bit. It is
stored in the smallest dtype that represents it exactly: ``uint8`` (integers 0..255),
``uint16`` (0..65535), ``int16`` (-32768..32767) or ``float32`` (anything else); the
round trip is verified on the bits before an entry is written. Native bit depth is kept; no
8-bit squashing.

Paper variants. With ``paper=True`` (default) the store also keeps, per image, the papers'
preprocessing :func:`medforensics.data.transforms.paper_preprocess` (min-max to 8-bit, resize to
256x256; destroys the noise fingerprint, exists only to reproduce Deep-RSI / DeepMammo) as
uint8 (256, 256), served by :meth:`StoreSource.paper_source`.

Keys. Entries are content-addressed by the file's sha256; the index maps every manifest
``path`` to the sha256 its bytes had when prepared (checked against the manifest's ``sha256``
column, so a file changed since ingest is reported, not cached). Identical files are stored
once. Re-running ``prepare`` on the same store only decodes what is new or changed.

Modules: :mod:`~medforensics.data.store.format` (names, exact encoding, the index),
:mod:`~medforensics.data.store.prepare` (writing) and :mod:`~medforensics.data.store.source`
(reading).
"""

from medforensics.data.store.format import (
    BLOB_NAME,
    FORMAT,
    INDEX_NAME,
    encode_exact,
    identity_preprocess,
)
from medforensics.data.store.prepare import PrepareFailure, PrepareReport, prepare_store
from medforensics.data.store.source import (
    StorePaperSource,
    StoreSource,
    bench_patch_reads,
    open_store,
)

__all__ = [
    "FORMAT",
    "INDEX_NAME",
    "BLOB_NAME",
    "PrepareFailure",
    "PrepareReport",
    "StoreSource",
    "StorePaperSource",
    "prepare_store",
    "open_store",
    "encode_exact",
    "identity_preprocess",
    "bench_patch_reads",
]
