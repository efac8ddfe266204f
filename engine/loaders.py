"""Checked readers for the files AIBA Studio reads back: JSON, ``.npy`` / ``.npz`` members and
``.safetensors``, with size limits and type checks, so that a damaged or hostile file ends in one
:class:`~engine.types.EngineError` line and never in another exception or a huge allocation.

Size limit: every array (an ``.npy`` member, an ``.npz`` entry, a safetensors tensor) may hold at
most :data:`MAX_ARRAY_MB` megabytes (default 512), read from the ``.npy`` header or the safetensors
header **before** any data is read; the environment variable ``AIBA_MAX_ARRAY_MB`` overrides it
(a positive number). A zip member whose declared uncompressed size exceeds the limit is refused
before it is inflated. JSON documents may be at most :data:`MAX_JSON_MB` megabytes.

:class:`Checker` checks the structure of decoded JSON (tables, lists, text, numbers) and raises
``"<source> <problem>: <fix>"``. No Qt here.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from engine.errors import EngineError

MAX_ARRAY_MB = 512.0
"""Default largest array (megabytes) any loader reads; ``AIBA_MAX_ARRAY_MB`` overrides it."""
ENV_MAX_ARRAY_MB = "AIBA_MAX_ARRAY_MB"
MAX_JSON_MB = 64.0
"""Largest JSON document (megabytes) a loader decodes."""
MAX_ITEMS = 1_000_000
"""Longest list or table a loader accepts in a JSON document."""
MAX_MEMBERS = 200_000
"""Most members an ``.npz`` / session archive may hold."""
_NPY_HEADER_SLACK = 1 << 16  # bytes an .npy member may hold beyond its array (magic + header)
_DTYPE_KINDS = "biufcSU"  # bool, ints, floats, complex, byte and unicode strings (no objects)
_SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2,
                       "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024  # the format's own limit


def one_line(text: str) -> str:
    """``text`` with line breaks folded into spaces (EngineError messages are one line)."""
    return " ".join(str(text).split())


def max_array_bytes() -> int:
    """The array size limit in bytes: ``$AIBA_MAX_ARRAY_MB`` when set, else :data:`MAX_ARRAY_MB`."""
    raw = os.environ.get(ENV_MAX_ARRAY_MB, "").strip()
    if not raw:
        return int(MAX_ARRAY_MB * 1024 * 1024)
    try:
        mb = float(raw)
    except ValueError:
        mb = math.nan
    if not math.isfinite(mb) or mb <= 0:
        raise EngineError(f"{ENV_MAX_ARRAY_MB}={raw!r} is not a positive number of megabytes: fix or unset it")
    return int(mb * 1024 * 1024)


@dataclass(frozen=True)
class Checker:
    """Checks decoded data of one file; every failure reads ``"<source> <problem>: <fix>"``."""

    source: str
    fix: str

    def fail(self, problem: str) -> EngineError:
        """The error to raise for ``problem`` (one line)."""
        return EngineError(one_line(f"{self.source} {problem}: {self.fix}"))

    def key(self, doc: dict[str, Any], name: str) -> Any:
        """``doc[name]``, or the error that the entry is missing."""
        if name not in doc:
            raise self.fail(f"has no {name!r} entry")
        return doc[name]

    def table(self, value: Any, name: str, max_items: int = MAX_ITEMS) -> dict[str, Any]:
        """A JSON object with text keys."""
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise self.fail(f"has a {name} that is not a table (got {type(value).__name__})")
        if len(value) > max_items:
            raise self.fail(f"has a {name} with {len(value)} entries (limit {max_items})")
        return value

    def items(self, value: Any, name: str, max_items: int = MAX_ITEMS) -> list[Any]:
        """A JSON list of at most ``max_items`` entries."""
        if not isinstance(value, list):
            raise self.fail(f"has a {name} that is not a list (got {type(value).__name__})")
        if len(value) > max_items:
            raise self.fail(f"has a {name} with {len(value)} entries (limit {max_items})")
        return value

    def text(self, value: Any, name: str, max_chars: int = 1_000_000) -> str:
        """A string of at most ``max_chars`` characters."""
        if not isinstance(value, str):
            raise self.fail(f"has a {name} that is not text (got {type(value).__name__})")
        if len(value) > max_chars:
            raise self.fail(f"has a {name} of {len(value)} characters (limit {max_chars})")
        return value

    def texts(self, value: Any, name: str, max_items: int = MAX_ITEMS) -> list[str]:
        """A list of strings."""
        out = self.items(value, name, max_items)
        if not all(isinstance(v, str) for v in out):
            raise self.fail(f"has a {name} that holds non-text entries")
        return list(out)

    def whole(self, value: Any, name: str, low: int = 0, high: int = 2**63 - 1) -> int:
        """An integer (not a bool) within ``[low, high]``."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"has a {name} that is not a whole number (got {value!r:.40})")
        if not low <= value <= high:
            raise self.fail(f"has a {name} of {value} (allowed {low}..{high})")
        return value

    def number(self, value: Any, name: str) -> float:
        """A finite int or float (not a bool)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(f"has a {name} that is not a number (got {value!r:.40})")
        try:
            out = float(value)
        except OverflowError:
            out = math.inf
        if not math.isfinite(out):
            raise self.fail(f"has a {name} that is not finite (got {value!r:.40})")
        return out

    def flag(self, value: Any, name: str) -> bool:
        """``true`` or ``false``."""
        if not isinstance(value, bool):
            raise self.fail(f"has a {name} that is not true/false (got {value!r:.40})")
        return value

    def array(self, value: np.ndarray, name: str, ndims: tuple[int, ...], kinds: str = "fiu") -> np.ndarray:
        """``value`` with one of ``ndims`` dimensions and a dtype kind in ``kinds``."""
        if value.ndim not in ndims or value.dtype.kind not in kinds:
            raise self.fail(f"has a {name} array of shape {value.shape} and type {value.dtype} "
                            f"(expected {' or '.join(f'{n}-d' for n in ndims)} of kind {kinds!r})")
        return value


def _check_dtype(dtype: np.dtype, what: Checker, name: str) -> None:
    if dtype.hasobject or dtype.kind not in _DTYPE_KINDS or dtype.fields is not None or dtype.subdtype:
        raise what.fail(f"has an array {name} of unsupported type {dtype}")


def check_array_size(shape: tuple[int, ...], itemsize: int, what: Checker, name: str,
                     limit: int | None = None) -> int:
    """The array's byte size; refuses shapes over the limit (:func:`max_array_bytes`)."""
    limit = max_array_bytes() if limit is None else limit
    if not all(isinstance(d, int) and d >= 0 for d in shape) or len(shape) > 32:
        raise what.fail(f"has an array {name} with an invalid shape {shape!r:.80}")
    nbytes = math.prod(shape) * int(itemsize)
    if nbytes > limit:
        raise what.fail(f"has an array {name} of shape {shape!r:.80} ({nbytes / 2**20:.6g} MB), over the "
                        f"{limit / 2**20:g} MB limit (raise {ENV_MAX_ARRAY_MB} if the file is trusted)")
    return nbytes


def read_npy(fh: IO[bytes], what: Checker, name: str, limit: int | None = None,
             size: int | None = None) -> np.ndarray:
    """One ``.npy`` array from ``fh``: header checked (dtype, shape × itemsize ≤ limit and, when
    the stream's ``size`` is known, ≤ the bytes left after the header) before the data is read;
    no pickles. The array is writable and owns its memory."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise what.fail(f"has an array {name} in .npy format {version}, which is not supported")
    except EngineError:
        raise
    except (ValueError, TypeError, SyntaxError, OverflowError, MemoryError, RecursionError, EOFError,
            OSError, struct.error, zipfile.BadZipFile) as exc:
        raise what.fail(f"has a damaged array {name} ({exc})") from None
    dtype = np.dtype(dtype)
    _check_dtype(dtype, what, name)
    nbytes = check_array_size(tuple(shape), dtype.itemsize, what, name, limit)
    if size is not None and nbytes > size - fh.tell():
        raise what.fail(f"has a truncated array {name} (shape {tuple(shape)!r:.80} needs {nbytes} bytes, "
                        f"{max(0, size - fh.tell())} present)")
    buf = bytearray(nbytes)
    view, got = memoryview(buf), 0
    try:
        while got < nbytes:
            n = fh.readinto(view[got:])  # type: ignore[attr-defined]
            if not n:
                break
            got += n
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, RuntimeError) as exc:
        raise what.fail(f"has a damaged array {name} ({exc})") from None
    if got < nbytes:
        raise what.fail(f"has a truncated array {name} ({got} of {nbytes} bytes)")
    flat = np.frombuffer(buf, dtype=dtype, count=math.prod(shape))
    return flat.reshape(shape, order="F" if fortran else "C")


def read_zip_member(zf: zipfile.ZipFile, member: str, what: Checker, limit: int) -> bytes:
    """A zip member's bytes, refusing a declared uncompressed size over ``limit`` before inflating."""
    try:
        info = zf.getinfo(member)
    except KeyError:
        raise what.fail(f"has no member {member!r}") from None
    if info.file_size > limit:
        raise what.fail(f"has a member {member!r} of {info.file_size} bytes (limit {limit})")
    try:
        with zf.open(info) as fh:
            return fh.read(limit + 1)
    except (OSError, ValueError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile,
            zipfile.LargeZipFile) as exc:  # zlib.error is a subclass of Exception only
        raise what.fail(f"has a damaged member {member!r} ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - zlib.error and other decompressor errors
        raise what.fail(f"has a damaged member {member!r} ({type(exc).__name__}: {exc})") from None


def read_zip_array(zf: zipfile.ZipFile, member: str, what: Checker, limit: int | None = None) -> np.ndarray:
    """An ``.npy`` member of an open zip archive, size-checked before anything is inflated."""
    limit = max_array_bytes() if limit is None else limit
    try:
        info = zf.getinfo(member)
    except KeyError:
        raise what.fail(f"has no member {member!r}") from None
    if info.file_size > limit + _NPY_HEADER_SLACK:
        raise what.fail(f"has a member {member!r} of {info.file_size / 2**20:.6g} MB, over the "
                        f"{limit / 2**20:g} MB limit (raise {ENV_MAX_ARRAY_MB} if the file is trusted)")
    try:
        with zf.open(info) as fh:
            return read_npy(fh, what, member, limit, size=info.file_size)
    except EngineError:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile/zlib raise many types on damaged members
        raise what.fail(f"has a damaged member {member!r} ({type(exc).__name__}: {exc})") from None


def open_zip(path: Path, what: Checker, problem: str = "is not a readable zip archive") -> zipfile.ZipFile:
    """An open zip archive with at most :data:`MAX_MEMBERS` members (caller closes it)."""
    try:
        zf = zipfile.ZipFile(path)
    except Exception as exc:  # noqa: BLE001 - damaged central directories raise assorted errors
        raise what.fail(f"{problem} ({type(exc).__name__}: {exc})") from None
    if len(zf.infolist()) > MAX_MEMBERS:
        zf.close()
        raise what.fail(f"holds more than {MAX_MEMBERS} members")
    return zf


def read_npz(path: str | Path, what: Checker, limit: int | None = None) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file by name (the ``.npy`` suffix dropped), each size-checked."""
    path = Path(path)
    if not path.is_file():
        raise what.fail("does not exist")
    zf = open_zip(path, what)
    with zf:
        out: dict[str, np.ndarray] = {}
        for info in zf.infolist():
            if info.is_dir():
                continue
            if not info.filename.endswith(".npy"):
                raise what.fail(f"holds a member {info.filename!r:.80} that is not an .npy array")
            out[info.filename[:-4]] = read_zip_array(zf, info.filename, what, limit)
    return out


def decode_json(raw: bytes | str, what: Checker, name: str | None = None) -> Any:
    """Decode JSON text (``name``: the part of the source it comes from); too deep, invalid or
    non-UTF-8 documents are refused."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return json.loads(text)
    except (ValueError, RecursionError, TypeError) as exc:  # JSONDecodeError, UnicodeDecodeError
        subject = f"has a {name} that is" if name else "is"
        raise what.fail(f"{subject} not valid JSON ({exc})") from None


def _part(path: Path, what: Checker) -> str | None:
    """How to name ``path`` inside ``what``'s messages: ``None`` when the source is the file itself."""
    if str(path) in what.source:
        return None
    return path.name if what.source.endswith(str(path.parent)) else f"{path.parent.name}/{path.name}"


def read_json(path: str | Path, what: Checker, max_mb: float = MAX_JSON_MB) -> Any:
    """A JSON file of at most ``max_mb`` megabytes, decoded."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise what.fail("is not a file")
        if size > max_mb * 2**20:
            raise what.fail(f"is {size / 2**20:.6g} MB, over the {max_mb:g} MB limit for JSON")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise what.fail(f"has no {_part(path, what)}" if _part(path, what) else "does not exist") from None
    except OSError as exc:
        raise what.fail(f"cannot be read ({exc.strerror or exc})") from None
    return decode_json(raw, what, _part(path, what))


def safetensors_header(path: str | Path, what: Checker,
                       limit: int | None = None) -> tuple[dict[str, tuple[str, tuple[int, ...]]], dict[str, str]]:
    """``({name: (dtype, shape)}, metadata)`` of a safetensors file, checked (dtypes, shapes,
    offsets inside the file, every tensor ≤ limit) without reading any tensor data."""
    path = Path(path)
    limit = max_array_bytes() if limit is None else limit
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise what.fail("is too short to be a safetensors file")
            (n,) = struct.unpack("<Q", head)
            if n > _SAFETENSORS_MAX_HEADER or n > size - 8:
                raise what.fail(f"declares a {n}-byte safetensors header in a {size}-byte file")
            raw = fh.read(n)
    except FileNotFoundError:
        raise what.fail("does not exist") from None
    except OSError as exc:
        raise what.fail(f"cannot be read ({exc.strerror or exc})") from None
    part = _part(path, what)
    if part:
        what = Checker(f"{what.source} ({part})", what.fix)
    doc = what.table(decode_json(raw, what), "safetensors header")
    meta = doc.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise what.fail("has safetensors metadata that is not a table of text")
    data_len = size - 8 - n
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name, entry in doc.items():
        label = repr(name[:60])
        entry = what.table(entry, f"tensor entry {label}")
        dtype = entry.get("dtype")
        if not isinstance(dtype, str) or dtype not in _SAFETENSORS_DTYPES:
            raise what.fail(f"has a tensor {label} of unknown type {dtype!r:.20}")
        shape = tuple(what.whole(d, f"dimension of tensor {label}") for d in
                      what.items(entry.get("shape"), f"shape of tensor {label}", 32))
        nbytes = check_array_size(shape, _SAFETENSORS_DTYPES[dtype], what, label, limit)
        offsets = what.items(entry.get("data_offsets"), f"offsets of tensor {label}", 2)
        begin, end = (what.whole(o, f"offset of tensor {label}") for o in offsets) if len(offsets) == 2 \
            else (-1, -1)
        if begin < 0 or end - begin != nbytes or end > data_len:
            raise what.fail(f"has a tensor {label} whose data lies outside the file or does not match its shape")
        out[name] = (dtype, shape)
    return out, dict(meta)


def read_safetensors(path: str | Path, what: Checker, framework: str = "np",
                     limit: int | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file, its header checked first
    (:func:`safetensors_header`); ``framework`` is ``"np"`` or ``"pt"``."""
    header, meta = safetensors_header(path, what, limit)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework=framework) as f:
            tensors = {name: f.get_tensor(name) for name in header}
    except Exception as exc:  # noqa: BLE001 - SafetensorError, TypeError (BF16 in numpy), OSError, ...
        raise what.fail(f"has tensors that cannot be read ({type(exc).__name__}: {exc})") from None
    return tensors, meta
