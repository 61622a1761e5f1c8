"""A loopback TCP proxy that can be told to stop relaying while keeping every socket open, as a
hung network middlebox does: the client's writes are accepted (the kernel acknowledges them) and
nothing ever comes back."""

from __future__ import annotations

import selectors
import socket
import threading


class HangingProxy:
    """Relays 127.0.0.1:``port`` to ``target``; ``hang()`` stops relaying, ``relay()`` resumes."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._relaying = threading.Event()
        self._relaying.set()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._pairs: dict[socket.socket, socket.socket] = {}
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, name="hanging-proxy", daemon=True)
        self._thread.start()

    def hang(self) -> None:
        """Stop relaying both ways; sockets stay open, and new connections are still accepted."""
        self._relaying.clear()
        self._wake_w.send(b"x")

    def relay(self) -> None:
        self._relaying.set()
        self._wake_w.send(b"x")

    def close(self) -> None:
        self._stop.set()
        self._wake_w.send(b"x")
        self._thread.join(10)
        for sock in [self._listener, self._wake_r, self._wake_w, *self._pairs]:
            sock.close()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stop.is_set():
                relaying = self._relaying.is_set()
                for sock in self._pairs:
                    # While hung nothing is read, so the client's bytes sit in the socket buffers.
                    events = selectors.EVENT_READ if relaying else 0
                    registered = selector.get_map().get(sock)
                    if events and registered is None:
                        selector.register(sock, events)
                    elif not events and registered is not None:
                        selector.unregister(sock)
                for key, _ in selector.select(timeout=1.0):
                    ready = key.fileobj
                    assert isinstance(ready, socket.socket)  # registered as sockets only
                    if ready is self._wake_r:
                        ready.recv(4096)
                    elif ready is self._listener:
                        self._accept()
                    elif self._relaying.is_set() and ready in self._pairs:
                        self._forward(selector, ready)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        self.accepted += 1
        upstream = socket.create_connection(self._target, timeout=5)
        for sock in (client, upstream):
            sock.setblocking(True)
            sock.settimeout(5)
        self._pairs[client] = upstream
        self._pairs[upstream] = client

    def _forward(self, selector: selectors.BaseSelector, sock: socket.socket) -> None:
        other = self._pairs[sock]
        try:
            data = sock.recv(65536)
            if data:
                other.sendall(data)
                return
        except OSError:
            pass
        for end in (sock, other):  # one side closed: close the pair, as a proxy does
            if selector.get_map().get(end) is not None:
                selector.unregister(end)
            self._pairs.pop(end, None)
            end.close()
