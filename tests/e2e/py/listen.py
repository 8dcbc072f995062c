"""Listeners for the probe test: `PORT` accepts TCP connections (and closes them) and echoes
UDP datagrams on the same port, on every address. Prints "ready" when listening."""
import socket
import sys
import threading

PORT = int(sys.argv[1])


def tcp():
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", PORT))
    s.listen(16)
    return s


def udp():
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", PORT))
    return s


t, u = tcp(), udp()


def echo():
    while True:
        data, peer = u.recvfrom(2048)
        u.sendto(data, peer)


threading.Thread(target=echo, daemon=True).start()
print("ready", flush=True)
while True:
    c, _ = t.accept()
    c.close()
