"""A WebSocket client in Python's standard library, for tests/host.rs.

It runs inside the test host (Debian's python3, which certbot brings), so the test can talk to
wsline through nginx on the host's own loopback. One connection; commands on stdin, one answer
line each on stdout:

  send TEXT   sends TEXT, answers `got TEXT` once TEXT comes back (presence messages skipped)
  wait TEXT   answers `got TEXT` once a text message TEXT arrives
  wait-close  answers `closed CODE` once the server closes
  close       sends close 1000, answers `closed CODE` with the server's code
and, whenever the server closes the connection, `closed CODE`. Usage: ws_client.py wss://HOST/PATH
"""

import base64
import os
import socket
import ssl
import struct
import sys
import urllib.parse

TIMEOUT = 20.0


def connect(url):
    u = urllib.parse.urlsplit(url)
    port = u.port or 443
    raw = socket.create_connection((u.hostname, port), timeout=TIMEOUT)
    context = ssl.create_default_context()
    if u.hostname in ("127.0.0.1", "localhost"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    sock = context.wrap_socket(raw, server_hostname=u.hostname)
    key = base64.b64encode(os.urandom(16)).decode()
    path = u.path or "/"
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {u.hostname}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise SystemExit("connection closed during the handshake")
        head += chunk
    status = head.split(b"\r\n", 1)[0]
    if b" 101 " not in status:
        raise SystemExit(f"upgrade refused: {status.decode(errors='replace')}")
    return sock


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def read_frame(sock):
    b0, b1 = read_exact(sock, 2)
    opcode, length = b0 & 0x0F, b1 & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", read_exact(sock, 2))
    elif length == 127:
        (length,) = struct.unpack("!Q", read_exact(sock, 8))
    return opcode, read_exact(sock, length)


def send_frame(sock, opcode, payload):
    mask = os.urandom(4)
    header = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        header += bytes([0x80 | n])
    elif n < 65536:
        header += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        header += bytes([0x80 | 127]) + struct.pack("!Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(header + mask + masked)


def answer(line):
    print(line, flush=True)


def wait_for(sock, text):
    """Reads until the text message `text`; answers pings. False when the server closed."""
    while True:
        try:
            opcode, payload = read_frame(sock)
        except (EOFError, OSError):
            answer("closed transport")
            return False
        if opcode == 0x8:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            answer(f"closed {code}")
            return False
        if opcode == 0x9:
            send_frame(sock, 0xA, payload)
        elif opcode == 0x1 and payload.decode() == text:
            answer(f"got {text}")
            return True


def main():
    sock = connect(sys.argv[1])
    answer("open")
    for line in sys.stdin:
        command, _, arg = line.rstrip("\n").partition(" ")
        if command == "send":
            send_frame(sock, 0x1, arg.encode())
            if not wait_for(sock, arg):
                return
        elif command == "wait":
            if not wait_for(sock, arg):
                return
        elif command == "wait-close":
            wait_for(sock, None)
            return
        elif command == "close":
            send_frame(sock, 0x8, struct.pack("!H", 1000))
            wait_for(sock, None)
            return


if __name__ == "__main__":
    main()
