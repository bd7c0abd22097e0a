#!/usr/bin/env python3
"""A UDP request/response server for DSR tests and benchmarks (standard
library only): every datagram is answered with "NAME " and the datagram.

    udp_echo.py NAME PORT ADDRESS [ADDRESS...]

One socket per address, so an answer to a request sent to the VIP comes
from the VIP (a socket on 0.0.0.0 would answer from the host's own address,
which a DSR client does not accept).
"""

import selectors
import socket
import sys


def main() -> None:
    name, port, addresses = sys.argv[1].encode(), int(sys.argv[2]), sys.argv[3:]
    selector = selectors.DefaultSelector()
    for address in addresses:
        sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        sock.bind((address, port))
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    while True:
        for key, _events in selector.select():
            sock = key.fileobj
            for _ in range(64):
                try:
                    data, peer = sock.recvfrom(65535)
                except BlockingIOError:
                    break
                sock.sendto(name + b" " + data, peer)


if __name__ == "__main__":
    main()
