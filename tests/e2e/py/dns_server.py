"""A tiny DNS server for the e2e tests (UDP and TCP port 53).

Answers by name: slow.test after a delay (argv[1] ms) with an A record, nx.test with NXDOMAIN,
fail.test with SERVFAIL, anything else with an A record at once. Prints "ready" when bound.
With argv[2], appends `name added_ms` for every UDP answer to that file: the time from
receiving the query to sending the answer, as the server measured it.
"""
import socket
import struct
import sys
import threading
import time

DELAY = float(sys.argv[1]) / 1000.0 if len(sys.argv) > 1 else 0.02
LOG = sys.argv[2] if len(sys.argv) > 2 else None


def qname(msg):
    off, labels = 12, []
    while msg[off]:
        n = msg[off]
        labels.append(msg[off + 1 : off + 1 + n].decode())
        off += 1 + n
    return ".".join(labels), off + 5


def answer(msg):
    name, end = qname(msg)
    qid = msg[:2]
    question = msg[12:end]
    if name == "nx.test":
        return qid + struct.pack(">HHHHH", 0x8183, 1, 0, 0, 0) + question
    if name == "fail.test":
        return qid + struct.pack(">HHHHH", 0x8182, 1, 0, 0, 0) + question
    if name == "slow.test":
        time.sleep(DELAY)
    rr = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, 7])
    return qid + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0) + question + rr


def serve_tcp(t):
    while True:
        c, _ = t.accept()
        with c:
            n = struct.unpack(">H", c.recv(2))[0]
            msg = b""
            while len(msg) < n:
                msg += c.recv(n - len(msg))
            out = answer(msg)
            c.sendall(struct.pack(">H", len(out)) + out)


u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("0.0.0.0", 53))
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("0.0.0.0", 53))
t.listen(8)
threading.Thread(target=serve_tcp, args=(t,), daemon=True).start()
print("ready", flush=True)
while True:
    msg, peer = u.recvfrom(512)
    t0 = time.perf_counter()
    u.sendto(answer(msg), peer)
    added = (time.perf_counter() - t0) * 1000
    if LOG:
        with open(LOG, "a") as f:
            f.write("%s %.3f\n" % (qname(msg)[0], added))
