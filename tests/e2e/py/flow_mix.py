"""Traffic for the sampling test.
  flow_mix.py sink PORT                   UDP sink on PORT (prints "ready"; drops what it gets)
  flow_mix.py udp HOST PORT RATE SECONDS  RATE new UDP flows a second (a new socket, so a new
                                          source port, per 60-byte datagram); prints the count
  flow_mix.py scan HOST FIRST LAST GAP_MS TCP connects to ports FIRST..LAST, GAP_MS apart
                                          (closed ports answer RST); prints the ports tried
"""
import socket
import sys
import time

mode = sys.argv[1]
if mode == "sink":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", int(sys.argv[2])))
    print("ready", flush=True)
    while True:
        s.recv(2048)
elif mode == "udp":
    host, port, rate, seconds = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    start = time.monotonic()
    sent = 0
    payload = b"m" * 60
    while time.monotonic() - start < seconds:
        due = int((time.monotonic() - start) * rate)
        while sent < due:
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.sendto(payload, (host, port))
            u.close()
            sent += 1
        time.sleep(0.005)
    print(sent)
elif mode == "scan":
    host, first, last, gap = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    for p in range(first, last + 1):
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.settimeout(1)
        try:
            c.connect((host, p))
        except OSError:
            pass
        c.close()
        time.sleep(gap / 1000)
    print(last - first + 1)
