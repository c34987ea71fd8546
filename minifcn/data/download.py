"""Download PASCAL VOC 2012 and extract it safely (``minifcn download-voc ROOT``).

* The download goes to ``<file>.partial`` and resumes with an HTTP ``Range`` request
  when that file exists (an interrupted download loses nothing); only a file whose
  MD5 checksum matches is renamed into place. A completed download with the wrong
  checksum is removed, since resuming it could never make it right.
* Extraction checks every member first and refuses the whole archive, before writing
  anything, if one would land outside ROOT: absolute paths, ``..`` components, links
  pointing out of ROOT, paths through links, device files. Members are extracted into
  a temporary folder inside ROOT and moved into place only when every member was
  extracted (and, for VOC, the tree is complete): a truncated archive leaves nothing
  behind that would block the next run.
* What arrived must be a tar archive (a URL of a web page gives HTML, not a tar): it is
  checked before it is kept, and a URL must end in a file name.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath

import re

# Public facts of the VOC2012 release (http://host.robots.ox.ac.uk/pascal/VOC/voc2012/).
VOC2012_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar"
VOC2012_MD5 = "6cd6e144f989b92b3379bac3b3de84fd"


class ChecksumError(ValueError):
    """A downloaded file's MD5 checksum is not the expected one."""


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the extraction folder."""


def check_md5(md5):
    """``md5`` lower-cased if it is 32 hex digits, None for ``None``/``""``/``"none"``;
    ValueError otherwise (checked before any download starts)."""
    if md5 is None or str(md5).lower() in ("", "none"):
        return None
    if not re.fullmatch(r"[0-9a-fA-F]{32}", str(md5)):
        raise ValueError(f"--md5 {md5!r}: expected 32 hexadecimal digits, or 'none' to skip the check")
    return str(md5).lower()


def url_file_name(url) -> str:
    """The file name at the end of ``url``'s path; ValueError when it has none (a folder or
    a site's front page would download an HTML listing, not the archive)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https", "ftp", "file"):
        raise ValueError(f"--url {url!r}: expected an http(s), ftp or file URL")
    name = PurePosixPath(urllib.parse.unquote(parsed.path)).name
    if not name or parsed.path.endswith("/") or name in (".", ".."):
        raise ValueError(f"--url {url!r} does not end in a file name (e.g. .../VOCtrainval_11-May-2012.tar)")
    return name


def _check_tar(path: Path, url):
    if not tarfile.is_tarfile(path):
        with open(path, "rb") as f:
            head = f.read(64)
        what = "an HTML page" if b"<html" in head.lower() or b"<!doctype" in head.lower() else "not a tar archive"
        raise ValueError(f"{url} gave {what} ({_size(path)} bytes starting {head[:24]!r}), not a tar archive; "
                         f"check --url")


def md5sum(path, chunk_size=1 << 20) -> str:
    """Hex MD5 digest of a file."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def download(url, dest, md5=None, timeout=60.0, chunk_size=1 << 16, progress=True) -> Path:
    """Download ``url`` to ``dest``, resuming from ``dest + ".partial"`` if present.

    Returns ``dest``. With ``md5`` given, the file is verified before it is renamed into
    place; a mismatch raises :class:`ChecksumError` and removes the bad file. A network
    failure raises ``ConnectionError`` and keeps the partial file for the next run.
    """
    dest = Path(dest)
    md5 = check_md5(md5)
    tar = dest.suffix in (".tar", ".tgz", ".gz", ".bz2", ".xz") or dest.name.endswith(".tar.gz")
    if dest.exists():
        if md5 and md5sum(dest) != md5:
            raise ChecksumError(f"{dest} exists but its MD5 is not {md5}; remove it to download it again")
        if tar and not tarfile.is_tarfile(dest):
            raise ValueError(f"{dest} exists but is not a tar archive; remove it to download it again")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    start = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        _fetch(request, partial, start, timeout, chunk_size, progress)
    except urllib.error.HTTPError as exc:
        if not (exc.code == 416 and start):  # 416: nothing left after `start`, the file is complete
            raise ConnectionError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise ConnectionError(f"downloading {url} failed ({exc}); {partial} keeps "
                              f"{_size(partial)} bytes, run again to resume") from exc
    if md5:
        got = md5sum(partial)
        if got != md5:
            partial.unlink()
            raise ChecksumError(f"{url}: MD5 of the download is {got}, expected {md5}; the bad file was "
                                f"removed, run again to download it afresh")
    if tar:
        try:
            _check_tar(partial, url)
        except ValueError:
            partial.unlink()
            raise
    os.replace(partial, dest)
    return dest


def _fetch(request, partial: Path, start: int, timeout, chunk_size, progress):
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        if start and resp.status != 206:  # the server ignored the range: start over
            start = 0
        elif start and not resp.headers.get("Content-Range", "").startswith(f"bytes {start}-"):
            raise OSError(f"the server answered range {resp.headers.get('Content-Range')!r} to a request "
                          f"for bytes {start}-")
        length = resp.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        from ..io import progress as bar_for

        with open(partial, "ab" if start else "wb") as f, \
                bar_for(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                        desc=partial.name.removesuffix(".partial"), disable=not progress) as bar:
            while chunk := resp.read(chunk_size):
                f.write(chunk)
                bar.update(len(chunk))
    if total is not None and partial.stat().st_size != total:
        raise OSError(f"connection closed after {partial.stat().st_size} of {total} bytes")


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def check_members(tar: tarfile.TarFile, root) -> list[tarfile.TarInfo]:
    """All members of ``tar``, after checking that each stays inside ``root``.

    Raises :class:`UnsafeArchiveError` naming the first offending member.
    """
    root = os.path.realpath(root)
    members = tar.getmembers()
    links = {str(PurePosixPath(m.name)) for m in members if m.issym() or m.islnk()}

    def inside(path):
        return os.path.commonpath([root, path]) == root

    for m in members:
        where = os.path.normpath(os.path.join(root, m.name))
        if os.path.isabs(m.name) or PurePosixPath(m.name).is_absolute() or not inside(where):
            raise UnsafeArchiveError(f"archive member {m.name!r} would be written outside {root}; "
                                     f"refusing to extract anything")
        parts = PurePosixPath(m.name).parts
        through = [str(PurePosixPath(*parts[:i])) for i in range(1, len(parts))]
        if any(p in links for p in through):
            raise UnsafeArchiveError(f"archive member {m.name!r} goes through a link; refusing to extract anything")
        if m.issym() or m.islnk():
            base = os.path.dirname(where) if m.issym() else root
            target = os.path.normpath(os.path.join(base, m.linkname))
            if os.path.isabs(m.linkname) or not inside(target):
                raise UnsafeArchiveError(f"archive member {m.name!r} links to {m.linkname!r}, outside {root}; "
                                         f"refusing to extract anything")
        elif not (m.isfile() or m.isdir()):
            raise UnsafeArchiveError(f"archive member {m.name!r} is a device or fifo; refusing to extract anything")
    return members


def safe_extract(tar_path, root, progress=True, check=None) -> list[Path]:
    """Extract the tar archive ``tar_path`` into ``root`` after :func:`check_members`.

    Members are written to a temporary folder in ``root`` (``.extract-<pid>-<hex>``, removed
    on any error and, if a kill left one, by the next run); only when all of them were
    extracted (and ``check(tmp)`` passed, if given) are its top-level entries moved into
    ``root``. An entry that already exists there stops everything before extraction
    (nothing is overwritten). A truncated or corrupt archive raises ValueError and leaves
    ``root`` as it was. Returns the top-level paths created.
    """
    from ..io import progress as bar, temporary_folder

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        tar = tarfile.open(tar_path)
    except (tarfile.TarError, OSError) as exc:
        raise ValueError(f"cannot open archive {tar_path}: {exc}") from exc
    with tar:
        try:
            members = check_members(tar, root)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ValueError(f"archive {tar_path} is truncated or corrupt ({exc}); remove it and download "
                             f"it again") from exc
        tops = sorted({PurePosixPath(m.name).parts[0] for m in members if PurePosixPath(m.name).parts})
        existing = [t for t in tops if (root / t).exists()]
        if existing:
            raise FileExistsError(f"{root / existing[0]} already exists; remove it or extract elsewhere")
        tmp = temporary_folder(root, "extract")
        try:
            try:
                for m in bar(members, desc=f"extracting {Path(tar_path).name}", unit="file", disable=not progress):
                    tar.extract(m, tmp, filter="data")  # the standard library's own safety net too
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise ValueError(f"archive {tar_path} is truncated or corrupt ({exc}); nothing was extracted "
                                 f"into {root}; remove it and download it again") from exc
            if check is not None:
                check(tmp)
            for t in tops:
                os.replace(tmp / t, root / t)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return [root / t for t in tops]


def download_voc(root, url=VOC2012_URL, md5=VOC2012_MD5, remove_tar=False, progress=True) -> Path:
    """Download and extract VOC2012 trainval into ``root``; returns the VOC2012 folder.

    Does nothing if ``root`` already holds it; the tar is kept in ``root`` (so a rerun
    never downloads again) unless ``remove_tar``.
    """
    from .voc import find_voc_root

    root = Path(root)
    found = _voc_in(root, find_voc_root)
    if found:
        return found
    md5 = check_md5(md5)
    name = url_file_name(url)
    tar_path = download(url, root / name, md5=md5, progress=progress)

    def complete(tmp):
        if not _voc_in(tmp, find_voc_root):
            raise ValueError(f"{tar_path} holds no VOC2012 folder (JPEGImages and ImageSets/Segmentation); "
                             f"nothing was extracted into {root}")

    safe_extract(tar_path, root, progress=progress, check=complete)
    found = _voc_in(root, find_voc_root)
    if not found:
        raise ValueError(f"{tar_path} extracted into {root} but holds no VOC2012 folder "
                         f"(JPEGImages and ImageSets/Segmentation)")
    if remove_tar:
        tar_path.unlink()
    return found


def _voc_in(root: Path, find_voc_root):
    try:
        found = find_voc_root(root)
    except FileNotFoundError:
        return None
    return found if (found / "ImageSets" / "Segmentation").is_dir() else None


def add_arguments(parser):
    parser.add_argument("root", metavar="ROOT", help="folder to download into (VOCdevkit/VOC2012 is created there)")
    parser.add_argument("--url", default=VOC2012_URL, help="archive URL (default: the official VOC2012 trainval tar)")
    parser.add_argument("--md5", default=VOC2012_MD5,
                        help="expected MD5 of the archive (default: the official one; 'none' skips the check)")
    parser.add_argument("--remove-tar", action="store_true", help="delete the tar after a successful extraction")


def main(args) -> int:
    md5 = check_md5(args.md5)          # flags first: before any byte is downloaded
    url_file_name(args.url)
    if not str(args.root).strip():
        raise ValueError("ROOT is empty: expected a folder name")
    if os.path.exists(args.root) and not os.path.isdir(args.root):
        raise ValueError(f"ROOT {args.root} is an existing file: expected a folder")
    try:
        voc = download_voc(args.root, url=args.url, md5=md5, remove_tar=args.remove_tar)
    except (OSError, ValueError) as exc:
        print(f"minifcn download-voc: error: {exc}", file=sys.stderr)
        return 2
    print(f"VOC data ready in {voc}  (use: minifcn train --data {voc})")
    return 0
