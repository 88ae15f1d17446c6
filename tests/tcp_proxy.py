"""A TCP proxy on loopback that a test can cut or stall: where a real service (Redis) goes down or hangs.

    proxy = TcpProxy(6379).start()        # forwards 127.0.0.1:proxy.port -> 127.0.0.1:6379
    proxy.cut()                           # closes every connection and refuses new ones: the service is down
    proxy.hang()                          # accepts, never answers: the service hangs
    proxy.restore()                       # forwards again
    proxy.stop()
"""

from __future__ import annotations

import select
import socket
import threading


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.mode = "forward"
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.port = 0

    def start(self) -> "TcpProxy":
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.mode == "cut":
                client.close()
                continue
            with self._lock:
                self._conns.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        if self.mode == "hang":
            return  # held open, never answered
        try:
            upstream = socket.create_connection(self.target, timeout=2)
        except OSError:
            client.close()
            return
        with self._lock:
            self._conns.append(upstream)
        pair = {client: upstream, upstream: client}
        try:
            while not self._stopped.is_set() and self.mode == "forward":
                ready, _, _ = select.select(list(pair), [], [], 0.1)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if self.mode == "forward":
                        pair[sock].sendall(data)
        except OSError:
            pass
        finally:
            for sock in pair:
                try:
                    sock.close()
                except OSError:
                    pass

    def _close_all(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def cut(self) -> None:
        self.mode = "cut"
        self._close_all()

    def hang(self) -> None:
        self.mode = "hang"
        self._close_all()

    def restore(self) -> None:
        self.mode = "forward"

    def stop(self) -> None:
        self._stopped.set()
        self._close_all()
        if self._listener is not None:
            self._listener.close()
