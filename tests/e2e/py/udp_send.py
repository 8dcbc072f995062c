"""Sends argv[3] UDP datagrams of argv[4] payload bytes to argv[1]:argv[2] from one
unconnected socket (so ICMP errors do not stop it), as fast as it can. Prints the source
port."""
import socket
import sys

host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("::" if ":" in host else "0.0.0.0", 0))
payload = b"x" * int(sys.argv[4])
for _ in range(int(sys.argv[3])):
    s.sendto(payload, (host, port))
print(s.getsockname()[1], flush=True)
