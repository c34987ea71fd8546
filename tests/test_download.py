"""download-voc against a loopback HTTP server started here (with Range support),
serving small tar archives built here: full download, resume, checksum, safe extraction."""
import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from minifcn import cli
from minifcn.data import VOCSegmentation
from minifcn.data.download import ChecksumError, UnsafeArchiveError, download, download_voc, safe_extract


class Handler(BaseHTTPRequestHandler):
    """Serves ``server.files[path]``; honours ``Range: bytes=N-`` unless ``server.ignore_range``;
    ``server.cut_after`` (bytes) makes the next response stop early, as a dropped connection."""

    def do_GET(self):
        srv = self.server
        body = srv.files.get(self.path)
        srv.log.append((self.path, self.headers.get("Range")))
        if body is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and not srv.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        if srv.cut_after is not None:
            payload, srv.cut_after = payload[: srv.cut_after], None
            self.close_connection = True
        # counted before the write: the client may finish reading, and the test assert,
        # before this thread runs again after it
        srv.sent += len(payload)
        self.wfile.write(payload)

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def server():
    """A loopback-only server on a free port, shut down when the test ends."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.files, srv.log, srv.sent, srv.cut_after, srv.ignore_range = {}, [], 0, None, False
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def voc_tar(extra=()):
    """A tiny VOCdevkit/VOC2012 tree (two images) as tar bytes; ``extra`` adds TarInfo members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for i in range(2):
            png, jpg = io.BytesIO(), io.BytesIO()
            label = np.zeros((12, 16), np.uint8)
            label[3:9, 4:10] = 255
            label[4:8, 5:9] = 8 + i
            im = Image.fromarray(label, mode="P")
            im.putpalette(list(range(256)) * 3)  # a full palette, or PNG keeps fewer bits per index
            im.save(png, format="PNG")
            Image.fromarray(np.full((12, 16, 3), 90, np.uint8)).save(jpg, format="JPEG")
            add(f"VOCdevkit/VOC2012/SegmentationClass/im{i}.png", png.getvalue())
            add(f"VOCdevkit/VOC2012/JPEGImages/im{i}.jpg", jpg.getvalue())
        add("VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt", b"im0\nim1\n")
        add("VOCdevkit/VOC2012/padding.bin", np.random.default_rng(0).bytes(60_000))  # a few chunks
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


def md5(data):
    return hashlib.md5(data).hexdigest()


def test_full_download_and_extract(server, tmp_path):
    body = voc_tar()
    server.files["/VOC.tar"] = body
    voc = download_voc(tmp_path, url=server.url + "/VOC.tar", md5=md5(body), progress=False)
    assert voc == tmp_path / "VOCdevkit" / "VOC2012"
    ds = VOCSegmentation(tmp_path)
    assert ds.ids == ["im0", "im1"] and int(ds[1][1].max()) == 255 and 9 in ds[1][1]
    assert (tmp_path / "VOC.tar").read_bytes() == body
    assert sorted(p.name for p in tmp_path.iterdir()) == ["VOC.tar", "VOCdevkit"]  # no leftovers
    assert server.log == [("/VOC.tar", None)]
    # a second run finds the data and does not download again
    assert download_voc(tmp_path, url=server.url + "/VOC.tar", md5=md5(body), progress=False) == voc
    assert len(server.log) == 1


def test_resume_from_partial_file(server, tmp_path):
    body = voc_tar()
    server.files["/VOC.tar"] = body
    (tmp_path / "VOC.tar.partial").write_bytes(body[:25_000])
    dest = download(server.url + "/VOC.tar", tmp_path / "VOC.tar", md5=md5(body), progress=False)
    assert dest.read_bytes() == body
    assert server.log == [("/VOC.tar", "bytes=25000-")]
    assert server.sent == len(body) - 25_000
    assert not (tmp_path / "VOC.tar.partial").exists()


def test_dropped_connection_keeps_partial_and_resumes(server, tmp_path):
    body = voc_tar()
    server.files["/VOC.tar"] = body
    server.cut_after = 10_000
    with pytest.raises(ConnectionError, match="resume"):
        download(server.url + "/VOC.tar", tmp_path / "VOC.tar", md5=md5(body), timeout=5, progress=False)
    assert (tmp_path / "VOC.tar.partial").stat().st_size == 10_000
    assert not (tmp_path / "VOC.tar").exists()
    download(server.url + "/VOC.tar", tmp_path / "VOC.tar", md5=md5(body), timeout=5, progress=False)
    assert (tmp_path / "VOC.tar").read_bytes() == body
    assert server.log[-1] == ("/VOC.tar", "bytes=10000-")


def test_server_without_range_support_restarts(server, tmp_path):
    body = voc_tar()
    server.files["/VOC.tar"] = body
    server.ignore_range = True
    (tmp_path / "VOC.tar.partial").write_bytes(b"x" * 5000)
    download(server.url + "/VOC.tar", tmp_path / "VOC.tar", md5=md5(body), progress=False)
    assert (tmp_path / "VOC.tar").read_bytes() == body


def test_complete_partial_file_is_verified(server, tmp_path):
    body = voc_tar()
    server.files["/VOC.tar"] = body
    (tmp_path / "VOC.tar.partial").write_bytes(body)  # interrupted just before the rename
    download(server.url + "/VOC.tar", tmp_path / "VOC.tar", md5=md5(body), progress=False)
    assert (tmp_path / "VOC.tar").read_bytes() == body and server.sent == 0


def test_bad_checksum_removes_the_download(server, tmp_path):
    server.files["/VOC.tar"] = voc_tar()
    with pytest.raises(ChecksumError, match="0123456789abcdef0123456789abcdef"):
        download_voc(tmp_path, url=server.url + "/VOC.tar", md5="0123456789abcdef0123456789abcdef",
                     progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing kept, nothing extracted


def test_http_error_is_clear(server, tmp_path):
    with pytest.raises(ConnectionError, match="404"):
        download(server.url + "/missing.tar", tmp_path / "m.tar", progress=False)


def evil(name, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    data = b"pwned" if kind == tarfile.REGTYPE else b""
    info.size = len(data)
    return info, data


@pytest.mark.parametrize("member", [
    evil("../evil.txt"),
    evil("VOCdevkit/../../evil.txt"),
    evil("/tmp/evil.txt"),
    evil("VOCdevkit/link", tarfile.SYMTYPE, "../../outside"),
    evil("VOCdevkit/abs", tarfile.SYMTYPE, "/etc"),
    evil("VOCdevkit/hard", tarfile.LNKTYPE, "../outside"),
    evil("VOCdevkit/fifo", tarfile.FIFOTYPE),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-absolute", "hardlink-out", "fifo"])
def test_unsafe_archives_are_refused_before_anything_is_written(tmp_path, member):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "a.tar").write_bytes(voc_tar(extra=[member]))
    with pytest.raises(UnsafeArchiveError, match="refusing to extract anything"):
        safe_extract(tmp_path / "a.tar", root, progress=False)
    assert list(root.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar", "root"]


def test_path_through_an_inside_link_is_refused(tmp_path):
    # "d" -> "." is harmless by itself, but "d/d/../../x" walks out of the root through it
    members = [evil("d", tarfile.SYMTYPE, "."), evil("d/d/../../x")]
    (tmp_path / "a.tar").write_bytes(voc_tar(extra=members[:1]))
    safe_extract(tmp_path / "a.tar", tmp_path / "ok", progress=False)  # an inside link alone is fine
    (tmp_path / "b.tar").write_bytes(voc_tar(extra=members))
    with pytest.raises(UnsafeArchiveError):
        safe_extract(tmp_path / "b.tar", tmp_path / "root", progress=False)
    assert list((tmp_path / "root").iterdir()) == []


def test_existing_entry_is_not_overwritten(tmp_path):
    (tmp_path / "a.tar").write_bytes(voc_tar())
    (tmp_path / "root" / "VOCdevkit").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="VOCdevkit"):
        safe_extract(tmp_path / "a.tar", tmp_path / "root", progress=False)
    assert list((tmp_path / "root" / "VOCdevkit").iterdir()) == []


def test_command_line(server, tmp_path, capsys):
    body = voc_tar()
    server.files["/VOC.tar"] = body
    server.files["/evil.tar"] = bad = voc_tar(extra=[evil("../evil.txt")])
    assert cli.main(["download-voc", str(tmp_path / "bad"), "--url", server.url + "/evil.tar",
                     "--md5", md5(bad)]) == 2
    err = capsys.readouterr().err
    assert "../evil.txt" in err and "refusing" in err
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "bad" / "VOCdevkit").exists()
    assert cli.main(["download-voc", str(tmp_path / "good"), "--url", server.url + "/VOC.tar",
                     "--md5", md5(body), "--remove-tar"]) == 0
    assert "VOCdevkit/VOC2012" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "good").iterdir()) == ["VOCdevkit"]
