"""TCP for the RTT test.

`serve PORT`: for each connection reads an 8-byte length and that many bytes, waits 300 ms
(every byte acknowledged by then) and sends "bye".
`send HOST PORT BYTES IDLE_S`: connects, prints its local port, sends BYTES, reads "bye",
then keeps the connection open and idle for IDLE_S seconds.

weir reads the smoothed RTT from the sending socket as each packet leaves. The client's last
packets (its ACK of "bye") leave after its last RTT sample, so they carry the final smoothed
RTT, the one `ss -ti` shows while the connection idles.
"""
import socket
import struct
import sys
import time


def read_exact(c, n):
    got = 0
    while got < n:
        chunk = c.recv(min(1 << 16, n - got))
        if not chunk:
            raise EOFError
        got += len(chunk)


if sys.argv[1] == "serve":
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("0.0.0.0", int(sys.argv[2])))
    l.listen(4)
    print("ready", flush=True)
    while True:
        c, _ = l.accept()
        try:
            n = struct.unpack(">Q", c.recv(8, socket.MSG_WAITALL))[0]
            read_exact(c, n)
            time.sleep(0.3)
            c.sendall(b"bye")
            while c.recv(1 << 16):
                pass
        except (EOFError, OSError):
            pass
        c.close()
else:
    s = socket.create_connection((sys.argv[2], int(sys.argv[3])))
    print(s.getsockname()[1], flush=True)
    n = int(sys.argv[4])
    s.sendall(struct.pack(">Q", n) + b"y" * n)
    assert s.recv(3, socket.MSG_WAITALL) == b"bye"
    time.sleep(float(sys.argv[5]))
    s.close()
