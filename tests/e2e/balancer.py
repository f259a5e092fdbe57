"""A TCP load balancer on loopback for replicated control planes: the one public URL the
instances are given, forwarding each connection to the first replica that accepts it (as a
cloud load balancer's health check would skip a dead one)."""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.e2e.stack import free_port


class Balancer:
    def __init__(self, backends: list[int]) -> None:
        self.backends = backends  # replica ports, tried in order
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._sock.settimeout(0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> Balancer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        for port in list(self.backends):
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=2)
                break
            except OSError:
                continue
        else:
            client.close()
            return
        upstream.settimeout(None)
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
