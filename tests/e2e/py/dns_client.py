"""Sends one DNS query per name (a new socket each, so each is its own flow) and prints
`name port latency_ms rcode` for each answer. argv: server, then names; a name prefixed with
tcp: is asked over TCP."""
import socket
import struct
import sys
import time

server = sys.argv[1]
for i, spec in enumerate(sys.argv[2:]):
    tcp = spec.startswith("tcp:")
    name = spec[4:] if tcp else spec
    q = struct.pack(">HHHHHH", 0x1000 + i, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    q += struct.pack(">HH", 1, 1)
    if tcp:
        s = socket.create_connection((server, 53), timeout=5)
        t0 = time.perf_counter()
        s.sendall(struct.pack(">H", len(q)) + q)
        n = struct.unpack(">H", s.recv(2))[0]
        r = b""
        while len(r) < n:
            r += s.recv(n - len(r))
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        s.connect((server, 53))
        t0 = time.perf_counter()
        s.send(q)
        r = s.recv(512)
    ms = (time.perf_counter() - t0) * 1000
    port = s.getsockname()[1]
    s.close()
    print(name, port, "%.3f" % ms, r[3] & 0xF, flush=True)
