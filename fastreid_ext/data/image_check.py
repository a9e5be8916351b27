"""Check every image a run will read before the first iteration (issue 13, item 3).

Without this, a truncated JPEG stops training when the loader reaches it
(:func:`fastreid_ext.data.common.read_image`), possibly hours in. :func:`check_images` scans a list
of image paths in seconds and returns the unreadable ones with a reason; ``fastreid_ext.data.build``
calls it once per split (``DATASETS.CHECK_IMAGES``, ``DATASETS.SKIP_UNREADABLE``).

Checks per file (:func:`check_image`), cheapest first:

* the file exists, is a regular file and is not empty (``os.stat``);
* PIL identifies it and parses its header (``Image.open`` + ``.size``): catches random bytes,
  other file types, a file cut inside its header;
* the data is complete, without decoding the pixels:

  - JPEG: the end-of-image marker ``FF D9`` within the last 32 bytes, once trailing zero padding is
    removed. Inside the entropy-coded data an ``FF`` byte is always followed by ``00`` or a restart
    marker (``D0``-``D7``), so ``FF D9`` near the end means the last scan was written to its end; a
    file cut anywhere after its header lacks it. Embedded EXIF thumbnails carry their own EOI, but in
    the header, far from the end.
  - PNG: the ``IEND`` chunk (``00 00 00 00 'IEND' AE 42 60 82``) ends the file (zero padding allowed).
  - any other format (BMP, GIF, WebP, TIFF, ...; rare in re-id sets): a full ``Image.load()``.

  A JPEG/PNG without its end marker is not declared bad on that alone: it is then fully decoded
  (``Image.load()``, exactly what the loader does), and is bad only if that fails. So a file with
  data appended after its EOI (some cameras and phones do that) passes, while a truncated file,
  which PIL refuses ("image file is truncated", even with only the last byte missing), fails with
  PIL's message. In short: a file is reported when the training loader would fail on it.

  Not caught (by design, it would need a full decode of every image): a JPEG/PNG whose header and end
  are intact but whose middle is damaged. PIL decodes most such JPEGs with visible artefacts instead
  of failing, so the loader does not stop on them either.

Cache: results are stored per scan group, one JSON file under ``<cache dir>/image_check/`` for the
deepest folder holding all the scanned paths (a dataset's split folder, or the dataset folder for
query + gallery), named after that folder and a hash of its absolute path. Each entry is keyed by
the path relative to that folder and holds ``[size, mtime_ns, reason or null]``: a file whose size or
mtime changed is checked again, bad results included; unchanged files are not opened at all, so a
second run costs one ``os.stat`` per image. Files are written atomically (temporary file +
``os.replace``), so concurrent writers (several ranks, several runs) never leave a torn file: the
last one wins, and an entry lost that way is only checked again. A cache file that cannot be read or
parsed, or has another version, is ignored and rebuilt; a cache folder that cannot be written only
costs the caching (one warning). Cache files unused for 30 days are removed when a cache is written.
The cache folder is ``$FASTREID_EXT_CACHE`` or ``~/.cache/fastreid_ext`` (the rule of
``fastreid_ext.compat.CACHE_DIR``), read at call time.

This module needs neither torch nor FastReID.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from PIL import Image

logger = logging.getLogger(__name__)

#: bumped when the checks change, so results of older checks are not reused
CHECK_VERSION = 1
#: how far from the end (after removing zero padding) a JPEG's EOI marker may be
JPEG_EOI_WINDOW = 32
#: bytes read from the end of a file for the end-marker check
TAIL_BYTES = 4096
#: cache files not used for this long are removed when a cache is written
PRUNE_AFTER_S = 30 * 24 * 3600
#: fewer files than this are checked in the calling thread (no pool)
_POOL_MIN = 64

_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_JPEG_EOI = b"\xff\xd9"


def default_cache_dir() -> Path:
    """``$FASTREID_EXT_CACHE`` or ``~/.cache/fastreid_ext`` (``fastreid_ext.compat.CACHE_DIR``'s rule,
    evaluated now, so a changed environment variable is honoured)."""
    return Path(os.environ.get("FASTREID_EXT_CACHE") or Path.home() / ".cache" / "fastreid_ext")


# --------------------------------------------------------------------------------------------
# one file
# --------------------------------------------------------------------------------------------
def _tail(f, size: int) -> bytes:
    """The file's last bytes without trailing zero padding (reads further back over long padding)."""
    end = size
    while end > 0:
        start = max(0, end - TAIL_BYTES)
        f.seek(start)
        block = f.read(end - start).rstrip(b"\x00")
        if block:
            return block
        end = start
    return b""


def _complete(fmt: str | None, tail: bytes) -> bool | None:
    """Whether the end of the data is there: True/False for JPEG and PNG, None for other formats."""
    if fmt == "JPEG":
        return _JPEG_EOI in tail[-JPEG_EOI_WINDOW:]
    if fmt == "PNG":
        return tail.endswith(_PNG_IEND)
    return None


def check_image(path: str) -> str | None:
    """Why the image at ``path`` cannot be read (one line), or None when it can. See the module
    docstring for the checks per format."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "file not found"
    except OSError as e:
        return f"cannot stat: {e.strerror or e}"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size == 0:
        return "empty file (0 bytes)"
    fmt = complete = None
    try:
        with open(path, "rb") as f:
            try:
                with Image.open(f) as im:
                    im.size  # noqa: B018  (the header was parsed)
                    fmt = im.format
                    complete = _complete(fmt, _tail(f, st.st_size))
                    if complete:
                        return None
                    f.seek(0)  # no end marker (JPEG/PNG) or another format: decode as the loader does
                    im.load()
                    return None
            except Exception as e:  # PIL raises many kinds (OSError, SyntaxError, ValueError, ...)
                if fmt is None:
                    return "not an image PIL can identify" if type(e).__name__ == "UnidentifiedImageError" \
                        else f"cannot read the image header: {e}"
                if complete is False:
                    end = "end-of-image marker (FF D9)" if fmt == "JPEG" else "IEND chunk"
                    return f"truncated {fmt}: no {end} at the end, and decoding fails ({e})"
                return f"{fmt} cannot be decoded: {e}"
    except OSError as e:  # open() itself
        return f"cannot open: {e.strerror or e}"


# --------------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------------
def _group_dir(abs_paths: Sequence[str]) -> str:
    """Deepest folder holding every path (the cache file's key)."""
    dirs = {os.path.dirname(p) for p in abs_paths}
    try:
        return os.path.commonpath(list(dirs))
    except ValueError:  # different drives (Windows)
        return ""


def _cache_file(cache_dir: Path, group: str) -> Path:
    digest = hashlib.sha1(group.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(group.rstrip(os.sep)) or "root")[:60]
    return cache_dir / "image_check" / f"{name}-{digest}.json"


def _load_cache(path: Path, group: str) -> dict:
    """``{relative path: [size, mtime_ns, reason]}``; empty when absent, corrupt or of another version."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        logger.warning("image check: ignoring unreadable cache %s (%s); it will be rebuilt", path, e)
        return {}
    if (not isinstance(data, dict) or data.get("version") != CHECK_VERSION or data.get("dir") != group
            or not isinstance(data.get("files"), dict)):
        logger.info("image check: ignoring cache %s (other version or folder); it will be rebuilt", path)
        return {}
    try:
        os.utime(path)  # used now: not pruned
    except OSError:
        pass
    return data["files"]


def _cached_reason(entry, size: int, mtime_ns: int):
    """``(hit, reason)`` for a cache entry; anything malformed is a miss."""
    if (isinstance(entry, list) and len(entry) == 3 and entry[0] == size and entry[1] == mtime_ns
            and (entry[2] is None or isinstance(entry[2], str))):
        return True, entry[2]
    return False, None


def _prune(folder: Path, keep: Path) -> None:
    now = time.time()
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for n in names:
        p = folder / n
        if p == keep or not n.endswith(".json"):
            continue
        try:
            if now - p.stat().st_mtime > PRUNE_AFTER_S:
                p.unlink()
        except OSError:
            pass


def _save_cache(path: Path, group: str, files: dict) -> None:
    """Write atomically (temporary file in the same folder + ``os.replace``); never raises."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"version": CHECK_VERSION, "dir": group, "files": files}, f, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError as e:
        logger.warning("image check: cannot write the cache %s (%s); results are not cached", path, e)
        try:
            tmp.unlink()
        except OSError:
            pass
        return
    _prune(path.parent, path)


# --------------------------------------------------------------------------------------------
# many files
# --------------------------------------------------------------------------------------------
@dataclass
class ImageScan:
    """Result of :func:`scan_images`."""

    bad: list = field(default_factory=list)  #: ``(path, reason)`` per unreadable file, in input order
    checked: int = 0  #: distinct paths
    cached: int = 0  #: of which answered by the cache (not opened)
    seconds: float = 0.0
    cache_file: str = ""  #: the cache file used ("" without cache)

    def summary(self, what: str = "") -> str:
        label = f" ({what})" if what else ""
        return (f"image check{label}: {self.checked} images checked ({self.cached} from cache) in "
                f"{self.seconds:.2f} s, {len(self.bad)} unreadable")


def _default_workers() -> int:
    return min(16, 4 * (os.cpu_count() or 1))


def _show_progress(progress: bool) -> bool:
    if not progress:
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def scan_images(paths: Iterable[str], cache_dir: str | os.PathLike | None = None, progress: bool = True,
                workers: int | None = None, use_cache: bool = True, what: str = "") -> ImageScan:
    """Check every image in ``paths`` (see :func:`check_images`) and report counts and time; logs the
    summary line (N images checked (M from cache) in S s)."""
    t0 = time.perf_counter()
    paths = list(dict.fromkeys(os.fspath(p) for p in paths))  # distinct, in order
    scan = ImageScan(checked=len(paths))
    if not paths:
        return scan
    abs_paths = [os.path.abspath(p) for p in paths]
    group = _group_dir(abs_paths)
    cache_path = _cache_file(Path(cache_dir) if cache_dir else default_cache_dir(), group) if use_cache else None
    old = _load_cache(cache_path, group) if cache_path is not None else {}

    reasons: dict[str, str | None] = {}
    keys: dict[str, tuple[int, int]] = {}
    todo: list[int] = []
    for i, (p, a) in enumerate(zip(paths, abs_paths)):
        try:
            st = os.stat(a)
        except OSError:
            todo.append(i)  # missing / unreachable: never cached, the checker names the problem
            continue
        keys[a] = (st.st_size, st.st_mtime_ns)
        hit, reason = _cached_reason(old.get(os.path.relpath(a, group) if group else a), *keys[a])
        if hit:
            reasons[a] = reason
        else:
            todo.append(i)
    scan.cached = len(paths) - len(todo)

    def one(i):  # module-level check_image looked up per call (tests replace it)
        return check_image(paths[i])

    if todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=f"checking images{' ' + what if what else ''}", unit="img",
                   leave=False, disable=not _show_progress(progress))
        try:
            if len(todo) < _POOL_MIN or (workers is not None and workers <= 1):
                results = []
                for i in todo:
                    results.append(one(i))
                    bar.update(1)
            else:
                with ThreadPoolExecutor(max_workers=workers or _default_workers(),
                                        thread_name_prefix="image_check") as pool:
                    results = []
                    for r in pool.map(one, todo, chunksize=32):
                        results.append(r)
                        bar.update(1)
        finally:
            bar.close()
        for i, r in zip(todo, results):
            reasons[abs_paths[i]] = r

    scan.bad = [(p, reasons[a]) for p, a in zip(paths, abs_paths) if reasons[a] is not None]
    if cache_path is not None and todo:
        files = dict(old)
        for i in todo:
            a = abs_paths[i]
            if a in keys:  # a file that existed when stat'ed; its key is the state before the check
                files[os.path.relpath(a, group) if group else a] = [*keys[a], reasons[a]]
        _save_cache(cache_path, group, files)
        scan.cache_file = str(cache_path)
    elif cache_path is not None:
        scan.cache_file = str(cache_path)
    scan.seconds = time.perf_counter() - t0
    logger.info(scan.summary(what))
    return scan


def check_images(paths: Iterable[str], cache_dir: str | os.PathLike | None = None, progress: bool = True,
                 workers: int | None = None, use_cache: bool = True, what: str = "") -> list[tuple[str, str]]:
    """``(path, reason)`` for every unreadable image in ``paths`` (paths as given, in order).

    Args:
        paths: image files; duplicates are checked once.
        cache_dir: cache folder (its ``image_check/`` sub-folder is used); None: ``$FASTREID_EXT_CACHE``
            or ``~/.cache/fastreid_ext``.
        progress: tqdm progress bar over the files actually opened (only when stderr is a terminal).
        workers: threads (I/O bound); None: min(16, 4 x CPUs). Small scans run in the calling thread.
        use_cache: False reads every file and writes no cache.
        what: label for the progress bar and the summary log line.
    """
    return scan_images(paths, cache_dir=cache_dir, progress=progress, workers=workers, use_cache=use_cache,
                       what=what).bad


def unreadable_message(bad: Sequence[tuple[str, str]], total: int, what: str, limit: int = 50) -> str:
    """``N of M images of <what> are unreadable:`` then one ``path: reason`` line each (at most
    ``limit``, then how many more)."""
    lines = [f"  {p}: {r}" for p, r in bad[:limit]]
    if len(bad) > limit:
        lines.append(f"  ... and {len(bad) - limit} more")
    return f"{len(bad)} of {total} images of {what} are unreadable:\n" + "\n".join(lines)
