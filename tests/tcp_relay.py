"""An SSH ProxyCommand: relay stdin/stdout to a TCP port (``python tcp_relay.py HOST PORT``).

Ray's cluster launcher has no SSH port setting but passes ``auth.ssh_proxy_command`` to ssh as
its ProxyCommand; the ray_up test uses this relay to reach the sshd it started on a free port.
"""

from __future__ import annotations

import os
import socket
import sys
import threading


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    conn = socket.create_connection((host, port))

    def upstream() -> None:
        while chunk := os.read(0, 65536):
            conn.sendall(chunk)
        conn.shutdown(socket.SHUT_WR)

    threading.Thread(target=upstream, daemon=True).start()
    while chunk := conn.recv(65536):
        view = memoryview(chunk)
        while view:  # a pipe may take part of it
            view = view[os.write(1, view) :]


if __name__ == "__main__":
    main()
