"""``photosort review OUT``: the review page, served by the standard library on 127.0.0.1 only.

No other local page or user can drive it: every request must carry this run's random token (in the
URL for the page and its images, in a header for the API, so a form on another site cannot post),
and a Host of 127.0.0.1 or localhost on our port (a DNS-rebinding page names another host). It
serves only its own three files and crops / thumbnails of faces the index names, by an opaque id:
no path from the browser is ever opened. Every decision is committed to the index before the
answer goes back. Nothing is loaded from outside (no CDN, font or analytics; the CSP forbids it).
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from sorter.errors import PhotosortError
from sorter.io.bundle import BUNDLE_FILE, Bundle
from sorter.io.corrections import PAGE, BadCorrection, Corrections
from sorter.io.decode import DecodeError
from sorter.io.index import Index
from sorter.pipeline.classify import INDEX_FILE
from sorter.review.images import cached, crop_jpeg, thumb_jpeg
from sorter.review.queue import Item, Queue, build, face_id

ASSETS = {"/page.js": "application/javascript", "/page.css": "text/css"}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",  # the token is in the URL: never pass it on
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


class ReviewError(PhotosortError):
    """The review page cannot start on this folder (one line for the user)."""


def _asset(name: str) -> bytes:
    return resources.files("sorter.review").joinpath("assets", name).read_bytes()


class Review:
    """The page's state: the output folder, its model's thresholds, the corrections store."""

    def __init__(self, out: Path, model: Path | None = None):
        self.out = Path(out).absolute()
        if not (self.out / INDEX_FILE).is_file():
            raise ReviewError(f"{self.out}: not a photosort output folder (no {INDEX_FILE})")
        self.corrections = Corrections(self.out / INDEX_FILE)
        self.library = Path(self.corrections.get_meta("library") or "")
        model = Path(model or self.corrections.get_meta("model") or "")
        if not (model / BUNDLE_FILE).is_file():
            raise ReviewError(f"{self.out} was sorted without a person model; pass --model RUN")
        self.bundle = Bundle.load(model)
        self.accept, self.low = self.bundle.thresholds()
        self.lock = threading.Lock()
        self._queue: Queue | None = None

    def queue(self, fresh: bool = False) -> Queue:
        with self.lock:
            if self._queue is None or fresh:
                index = Index(self.out / INDEX_FILE)
                try:
                    rows = list(index.rows())
                finally:
                    index.close()
                people = list(dict.fromkeys([*self.bundle.classes, *self.accept]))
                self._queue = build(rows, self.corrections.active(), people, self.accept, self.low)
            return self._queue

    def state(self) -> dict:
        q = self.queue(fresh=True)
        return {
            "people": q.people,
            "doubts": [it.public() for it in q.doubts],
            "questions": [it.public() for it in q.questions],
            "new": [[it.public() for it in c] for c in q.new],
            "accepted": {p: len(v) for p, v in sorted(q.accepted.items())},
            "pending": len(self.corrections.pending()),
        }

    def person(self, name: str) -> dict:
        return {"faces": [it.public() for it in self.queue().accepted.get(name, [])]}

    def decide(self, body: dict) -> dict:
        ids, verdict, person = body.get("faces"), body.get("verdict"), body.get("person")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise BadCorrection("faces: a list of face ids")
        items = self._items(ids)
        if verdict == "is" and len({it.sha256 for it in items}) < len(items):
            raise BadCorrection("two faces in one photo are never the same person")
        t = time.perf_counter()
        with self.lock:
            batch = self.corrections.add(
                [(it.sha256, it.face, it.box) for it in items], str(verdict), person, PAGE
            )
        return {"ok": True, "batch": batch, "ms": round((time.perf_counter() - t) * 1000, 2)}

    def undo(self) -> dict:
        with self.lock:
            undone = self.corrections.undo(PAGE)
        return {"ok": True, "faces": [face_id(c.sha256, c.face or 0) for c in undone]}

    def image(self, kind: str, fid: str) -> bytes:
        (it,) = self._items([fid])
        make = crop_jpeg if kind == "crop" else thumb_jpeg
        return cached(
            self.out / INDEX_FILE, f"{fid}-{kind}.jpg", lambda: make(self.library, it.rel, it.box, it.at_s)
        )

    def _items(self, ids: list[str]) -> list[Item]:
        q = self.queue()
        if any(i not in q.items for i in ids):
            q = self.queue(fresh=True)
        missing = [i for i in ids if i not in q.items]
        if missing:
            raise KeyError(missing[0])
        return [q.items[i] for i in ids]


class ReviewServer:
    """A :class:`Review` on a local port. ``url`` carries the token; ``start`` serves in a thread."""

    def __init__(self, review: Review, port: int = 0):
        self.review = review
        self.token = secrets.token_urlsafe(24)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.hosts = {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?t={self.token}"

    def start(self) -> ReviewServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        self.warm()
        return self

    def serve_forever(self) -> None:
        self.warm()
        self.httpd.serve_forever()

    def warm(self) -> None:
        """Build the queue once in the background (index read, clustering imported) while the browser
        opens, so the first page load does not wait for it."""
        threading.Thread(target=self.review.queue, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.review.corrections.close()


def _handler(server: ReviewServer) -> type[BaseHTTPRequestHandler]:
    review = server.review

    class Handler(BaseHTTPRequestHandler):
        server_version = "photosort"
        sys_version = ""

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the URLs hold the token
            pass

        def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in HEADERS.items():
                self.send_header(k, v)
            try:
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the browser went away (a lazy image dropped)
                self.close_connection = True

        def _json(self, status: int, obj: object) -> None:
            self._send(status, json.dumps(obj).encode())

        def _allowed(self, header_only: bool) -> bool:
            if self.headers.get("Host") not in server.hosts:
                return False
            origin = self.headers.get("Origin")
            if origin is not None and origin.removeprefix("http://") not in server.hosts:
                return False
            given = self.headers.get("X-Photosort-Token", "")
            if not given and not header_only:
                given = parse_qs(urlsplit(self.path).query).get("t", [""])[0]
            return hmac.compare_digest(given.encode(), server.token.encode())

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            if not self._allowed(header_only=False):
                return self._json(HTTPStatus.FORBIDDEN, {"error": "forbidden"})
            url = urlsplit(self.path)
            path = url.path
            try:
                if path == "/":
                    page = _asset("page.html").replace(b"{{TOKEN}}", server.token.encode())
                    return self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
                if path in ASSETS:
                    return self._send(HTTPStatus.OK, _asset(path[1:]), ASSETS[path])
                if path == "/api/state":
                    return self._json(HTTPStatus.OK, review.state())
                if path == "/api/person":
                    name = parse_qs(url.query).get("name", [""])[0]
                    return self._json(HTTPStatus.OK, review.person(name))
                for kind in ("crop", "thumb"):
                    prefix = f"/{kind}/"
                    if path.startswith(prefix) and path.endswith(".jpg"):
                        data = review.image(kind, path[len(prefix) : -4])
                        break
                else:
                    data = None
            except KeyError:
                return self._json(HTTPStatus.NOT_FOUND, {"error": "no such face"})
            except OSError as exc:  # the photo moved or cannot be read: say so, keep serving
                return self._json(HTTPStatus.GONE, {"error": f"photo unreadable: {exc.strerror or exc}"})
            except DecodeError as exc:
                return self._json(HTTPStatus.GONE, {"error": f"photo unreadable: {exc}"})
            if data is not None:
                return self._send(HTTPStatus.OK, data, "image/jpeg")
            return self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            # the API takes the token from a header only: a cross-site form cannot set one
            if not self._allowed(header_only=True):
                return self._json(HTTPStatus.FORBIDDEN, {"error": "forbidden"})
            if not (self.headers.get("Content-Type") or "").startswith("application/json"):
                return self._json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": "JSON only"})
            try:
                n = min(int(self.headers.get("Content-Length") or 0), 1 << 20)
                body = json.loads(self.rfile.read(n) or b"{}")
                if self.path == "/api/decide":
                    return self._json(HTTPStatus.OK, review.decide(body))
                if self.path == "/api/undo":
                    return self._json(HTTPStatus.OK, review.undo())
            except (BadCorrection, ValueError) as exc:
                return self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            except KeyError:
                return self._json(HTTPStatus.NOT_FOUND, {"error": "no such face"})
            return self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

        def do_PUT(self) -> None:  # noqa: N802
            self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "not allowed"})

        do_DELETE = do_PATCH = do_PUT  # noqa: N815

    return Handler
