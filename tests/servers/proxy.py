"""A TCP proxy on 127.0.0.1 that a test can cut: a fault injector for any protocol.

:class:`TcpProxy` forwards every connection it accepts to one target (a Dovecot
port, say) byte for byte, so TLS runs end to end through it. A test can then
break the connections the client under test holds, at a moment of its choosing:

* :meth:`TcpProxy.cut_all` resets (TCP RST) every open connection now, e.g. while
  the client waits in IMAP IDLE;
* :meth:`TcpProxy.cut_after` arms a one-shot cut once a number of bytes more has
  flowed from the server to the clients, e.g. in the middle of a large FETCH;
* :meth:`TcpProxy.throttle` slows the server-to-client direction down, so such a
  transfer takes long enough to be cut in the middle.

New connections are accepted as before a cut, so the client can reconnect. One
thread per connection pumps both directions with ``select``; a cut is carried
out by that thread itself (SO_LINGER 0, then close), never by the caller.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time

from servers import LOCALHOST, ServerStartError

_BLOCK = 64 * 1024


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.cut = threading.Event()
        self.closed = threading.Event()


class TcpProxy:
    """Forwards ``host:port`` (chosen at the first :meth:`start`) to ``target``.

    Attributes:
        accepted: Connections accepted so far.
        cuts: Connections cut so far (by :meth:`cut_all` or :meth:`cut_after`).
    """

    def __init__(self, target_host: str, target_port: int, *, host: str = LOCALHOST) -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.accepted = 0
        self.cuts = 0
        self._port = 0
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._links: set[_Link] = set()
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._rate = 0
        self._cut_after: int | None = None

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("TcpProxy has not been started yet")
        return self._port

    # -- faults ---------------------------------------------------------------------

    def cut_all(self, timeout: float = 10.0) -> int:
        """Reset every open connection; return how many there were."""
        with self._lock:
            links = list(self._links)
        for link in links:
            link.cut.set()
        deadline = time.monotonic() + timeout
        for link in links:
            link.closed.wait(max(0.0, deadline - time.monotonic()))
        return len(links)

    def cut_after(self, downstream_bytes: int) -> None:
        """Cut every open connection once ``downstream_bytes`` more went to the clients."""
        with self._lock:
            self._cut_after = downstream_bytes

    def throttle(self, bytes_per_sec: int | None) -> None:
        """Limit the server-to-client rate of every connection (``None``: full speed)."""
        self._rate = int(bytes_per_sec or 0)

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Listen (on the same port again after a stop) and forward in the background."""
        if self._listener is not None:
            return
        self._stopping.clear()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self._port))
        except OSError as exc:
            listener.close()
            raise ServerStartError(
                f"TCP proxy cannot bind {self.host}:{self._port}: {exc}"
            ) from exc
        listener.listen(64)
        listener.settimeout(0.05)
        self._listener = listener
        self._port = listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, name=f"proxy-{self._port}")
        self._thread.daemon = True
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, cut every connection and join all threads."""
        if self._listener is None:
            return
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._listener.close()
        self._listener = None
        self.cut_all(timeout)
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------------

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            link = _Link(client, upstream)
            thread = threading.Thread(target=self._pump, args=(link,), daemon=True)
            with self._lock:
                self.accepted += 1
                self._links.add(link)
                self._threads.add(thread)
            thread.start()

    def _pump(self, link: _Link) -> None:
        sockets = [link.client, link.upstream]
        try:
            for sock in sockets:
                sock.setblocking(False)
            while not link.cut.is_set():
                readable, _, _ = select.select(sockets, [], [], 0.05)
                for sock in readable:
                    downstream = sock is link.upstream
                    size = _BLOCK
                    if downstream and self._rate:
                        size = max(1, min(_BLOCK, self._rate // 20))
                    try:
                        data = sock.recv(size)
                    except (BlockingIOError, InterruptedError):
                        continue
                    if not data:
                        return
                    peer = link.client if downstream else link.upstream
                    peer.setblocking(True)
                    peer.sendall(data)
                    peer.setblocking(False)
                    if downstream:
                        self._count_downstream(len(data))
                        if self._rate:
                            time.sleep(len(data) / self._rate)
        except OSError:
            return
        finally:
            if link.cut.is_set():
                with self._lock:
                    self.cuts += 1
            for sock in sockets:
                if link.cut.is_set():
                    _reset(sock)
                else:
                    _close(sock)
            with self._lock:
                self._links.discard(link)
                self._threads.discard(threading.current_thread())
            link.closed.set()

    def _count_downstream(self, count: int) -> None:
        with self._lock:
            if self._cut_after is None:
                return
            self._cut_after -= count
            if self._cut_after > 0:
                return
            self._cut_after = None
            links = list(self._links)
        for link in links:
            link.cut.set()


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    _close(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()
