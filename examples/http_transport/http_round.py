"""An HTTP transport for secagg rounds, on the round drivers alone.

:class:`RoundServer` serves one round of a :class:`~secagg.drivers.ServerDriver`
(any protocol family) on ``ThreadingHTTPServer``; :class:`RoundClient` runs a
:class:`~secagg.drivers.ClientDriver` against it with ``urllib``. Bodies are
the drivers' wire bytes (``application/octet-stream``). The endpoints:

* ``GET /next?party=N&after=S`` long-polls for the party's message of a stage
  newer than ``S``: 200 with the bytes and the stage's sequence number in
  ``X-Seq``, 204 when nothing came within the poll window, 410 once the round is over;
* ``POST /reply?party=N&seq=S`` answers the message of stage ``S`` (a reply to
  a stage already closed is ignored);
* ``POST /gone?party=N`` says the party leaves the round (the body says why).

A party that neither polls nor posts for ``liveness`` seconds while its answer
is awaited is reported gone too, and every stage closes at its deadline at the
latest; it closes as soon as the driver is ready.

NO AUTHENTICATION: anyone who reaches the port can speak for any party. The
threat model assumes a transport that authenticates each party (TLS with client
certificates binding the party id); in a deployment put this behind that.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.error import HTTPError
from urllib.parse import parse_qs, urlsplit
from urllib.request import Request, urlopen

__all__ = ["RoundClient", "RoundServer"]

OCTETS = "application/octet-stream"
_OVER = (-1, b"")


class RoundServer:
    """Serves one round of ``driver`` on ``host:port`` (0: a free port; see :attr:`url`)."""

    def __init__(self, driver: Any, *, host: str = "127.0.0.1", port: int = 0, stage_timeout: float = 60.0,
                 liveness: float = 5.0, poll_wait: float = 1.0, max_body: int = 1 << 26):
        self.driver, self.stage_timeout, self.liveness = driver, stage_timeout, liveness
        self.poll_wait, self.max_body = poll_wait, max_body
        self._cond = threading.Condition()
        self._seq, self._over = 0, False  # guarded by _cond, as are _box and _seen
        self._box: dict[int, bytes] = {}  # this stage's messages by party
        self._seen: dict[int, float] = {}  # party -> when it last polled or posted
        self._events: queue.Queue[tuple[str, int, int, bytes]] = queue.Queue()
        self.httpd = _Server((host, port), type("Handler", (_Handler,), {"round": self}))
        self.url = f"http://{host}:{self.httpd.server_address[1]}"

    def __enter__(self) -> RoundServer:
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True, name="http-round").start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.httpd.shutdown()
        self.httpd.server_close()

    def run(self) -> Any:
        """The whole round: its :class:`~secagg.result.AggregationResult` (or ProtocolAborted)."""
        driver = self.driver
        box = driver.start()
        while not driver.done:
            opened = self._publish(box)
            while not driver.ready and time.monotonic() < opened + self.stage_timeout:
                self._take(0.05)
                with self._cond:
                    seen = dict(self._seen)
                for party in driver.awaiting:
                    if time.monotonic() - max(seen.get(party, opened), opened) > self.liveness:
                        driver.gone(party, f"silent for {self.liveness:g} s")
            box = driver.close_stage()
        self._publish(box)
        self.stop()
        return driver.result()

    def stop(self) -> None:
        """The round is over for every client (they get 410 once their messages are fetched)."""
        with self._cond:
            self._over = True
            self._cond.notify_all()

    def _publish(self, box: dict[int, bytes]) -> float:
        with self._cond:
            self._seq, self._box = self._seq + 1, box
            self._cond.notify_all()
        return time.monotonic()

    def _take(self, timeout: float) -> None:
        with contextlib.suppress(queue.Empty):
            while True:  # the first event waits up to ``timeout``, the rest are taken if there
                kind, party, seq, body = self._events.get(timeout=timeout)
                timeout = 0
                if kind == "gone":
                    self.driver.left(party, "left: " + body.decode("utf-8", "replace")[:200])
                elif seq == self._seq:  # a reply to a closed stage is late: ignored
                    self.driver.receive(party, body)

    def next_message(self, party: int, after: int) -> tuple[int, bytes] | None:
        end = time.monotonic() + self.poll_wait
        with self._cond:
            while True:
                self._seen[party] = time.monotonic()
                if self._seq > after and party in self._box:
                    return self._seq, self._box[party]
                if self._over:
                    return _OVER
                if end <= time.monotonic():
                    return None
                self._cond.wait(end - time.monotonic())

    def post(self, kind: str, party: int, seq: int, body: bytes) -> None:
        with self._cond:
            self._seen[party] = time.monotonic()
        self._events.put((kind, party, seq, body))


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # every client may connect at once (5 would drop connections: 1 s retries)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up: its silence counts
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    round: RoundServer

    def do_GET(self) -> None:
        path, party, after = self._parse("after")
        if path != "/next" or party is None:
            return self._send(400)
        got = self.round.next_message(party, after)
        if got is None or got is _OVER:
            return self._send(204 if got is None else 410)
        self._send(200, got[1], got[0])

    def do_POST(self) -> None:
        path, party, n = self._parse("seq")
        size = int(self.headers.get("Content-Length") or 0)
        if path not in ("/reply", "/gone") or party is None or not 0 <= size <= self.round.max_body:
            return self._send(400)
        self.round.post(path[1:], party, n, self.rfile.read(size))
        self._send(204)

    def _parse(self, key: str) -> tuple[str, int | None, int]:
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        try:
            return url.path, int(q["party"][0]), int(q.get(key, ["0"])[0])
        except (KeyError, ValueError):
            return url.path, None, 0

    def _send(self, status: int, body: bytes = b"", seq: int = 0) -> None:
        self.send_response(status)
        self.send_header("Content-Type", OCTETS)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Seq", str(seq))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:  # quiet
        pass


class RoundClient:
    """Runs ``driver`` (a :class:`~secagg.drivers.ClientDriver`) for one round at ``url``."""

    def __init__(self, url: str, driver: Any, *, timeout: float = 60.0):
        self.url, self.driver, self.timeout = url, driver, timeout

    def run(self, contribution: Any = None) -> None:
        """Answer every message until the round is over. ``contribution`` goes with the first.
        A refused message or a local failure makes the client leave (and say so)."""
        party, after = self.driver.party, 0
        try:
            while True:
                try:
                    with urlopen(f"{self.url}/next?party={party}&after={after}", timeout=self.timeout) as resp:
                        status, seq, data = resp.status, int(resp.headers["X-Seq"]), resp.read()
                except HTTPError as exc:
                    if exc.code == 410:
                        return
                    raise
                if status != 200:
                    continue
                reply = self.driver.handle(data, contribution if after == 0 else None)
                after = seq
                if reply is not None:
                    self._post(f"reply?party={party}&seq={seq}", reply)
                elif self.driver.last_error is not None:
                    return self.leave(f"refused: {self.driver.last_error}")
        except Exception as exc:
            with contextlib.suppress(OSError):
                self.leave(f"{type(exc).__name__}: {exc}")
            raise

    def leave(self, why: str) -> None:
        """Tell the server this party leaves the round."""
        self._post(f"gone?party={self.driver.party}", why.encode())

    def _post(self, path: str, body: bytes) -> None:
        req = Request(f"{self.url}/{path}", data=body, method="POST", headers={"Content-Type": OCTETS})
        urlopen(req, timeout=self.timeout).close()
