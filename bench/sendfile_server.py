"""The loopback ceiling for blob GETs: the least a server can do to send a file over HTTP.

``python bench/sendfile_server.py PORT DIGEST=PATH...`` answers ``GET .../<digest>`` with the file,
through ``os.sendfile`` (as cargohold and docker-registry both do), one thread per connection, no
framework, ``Connection: close``. ``bench/run.py`` measures it with the same client as the two
registries, to tell how far each is from what the machine's loopback and the client allow.
"""

from __future__ import annotations

import os
import socket
import sys
import threading


def serve(conn: socket.socket, files: dict[str, str]) -> None:
    with conn:
        head = b""
        while b"\r\n\r\n" not in head:
            data = conn.recv(65536)
            if not data:
                return
            head += data
        path = head.split(b" ", 2)[1].decode()
        name = files.get(path.rsplit("/", 1)[-1])
        if name is None:
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        with open(name, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            conn.sendall(
                f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            offset = 0
            while offset < size:
                sent = os.sendfile(conn.fileno(), f.fileno(), offset, size - offset)
                if sent == 0:
                    break
                offset += sent


def main() -> None:
    port = int(sys.argv[1])
    files = dict(arg.split("=", 1) for arg in sys.argv[2:])
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn, files), daemon=True).start()


if __name__ == "__main__":
    main()
