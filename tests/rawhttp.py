"""A raw-socket HTTP/1.1 client for tests where the exact bytes on the wire matter.

Client libraries normalise what matters here: they fold repeated headers, refuse to send
malformed requests, and hide whether the server closed the connection. This module sends
bytes as given and hands back the response head as received (raw header lines in order),
the decoded body, and whether the peer closed the connection afterwards.
"""
import socket
import time

DEFAULT_TIMEOUT = 30.0


class Response:
    """One parsed response: `headers` keeps every line, in order, with its original case."""

    def __init__(self, status, reason, headers, raw_head, body):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.raw_head = raw_head
        self.body = body

    def get_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def get(self, name, default=None):
        values = self.get_all(name)
        return values[0] if values else default

    def raw_lines(self, name):
        """The header lines named `name`, exactly as they came (without CRLF)."""
        prefix = name.lower().encode() + b":"
        return [
            line
            for line in self.raw_head.split(b"\r\n")[1:]
            if line.lower().startswith(prefix)
        ]

    def __repr__(self):
        return "<Response %s %r, %d body bytes>" % (self.status, self.headers, len(self.body))


class ConnectionClosed(Exception):
    """The server closed the connection before a complete response head arrived."""


class RawConnection:
    def __init__(self, host, port, timeout=DEFAULT_TIMEOUT):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.timeout = timeout

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buffer += chunk
        return True

    def _read_until(self, marker):
        while marker not in self.buffer:
            if not self._fill():
                raise ConnectionClosed("closed with %d bytes pending: %r" % (
                    len(self.buffer), self.buffer[:200]))
        index = self.buffer.index(marker) + len(marker)
        data, self.buffer = self.buffer[:index], self.buffer[index:]
        return data

    def _read_exact(self, n):
        while len(self.buffer) < n:
            if not self._fill():
                raise ConnectionClosed("closed %d bytes short of the body" % (n - len(self.buffer)))
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _read_to_close(self):
        while self._fill():
            pass
        data, self.buffer = self.buffer, b""
        return data

    def read_response(self, head_request=False):
        """Reads one response; skips 1xx interim responses."""
        while True:
            raw_head = self._read_until(b"\r\n\r\n")
            lines = raw_head[:-4].split(b"\r\n")
            parts = lines[0].decode("latin-1").split(" ", 2)
            status = int(parts[1])
            reason = parts[2] if len(parts) > 2 else ""
            headers = []
            for line in lines[1:]:
                name, _, value = line.decode("latin-1").partition(":")
                headers.append((name, value.strip()))
            if 100 <= status < 200 and status != 101:
                continue
            break

        response = Response(status, reason, headers, raw_head, b"")
        if head_request or status in (204, 304) or 100 <= status < 200:
            return response
        te = (response.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            response.body = self._read_chunked()
        elif response.get("Content-Length") is not None:
            response.body = self._read_exact(int(response.get("Content-Length")))
        else:
            response.body = self._read_to_close()
        return response

    def _read_chunked(self):
        body = b""
        while True:
            size_line = self._read_until(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                # Trailers, if any, end with an empty line.
                while self._read_until(b"\r\n") != b"\r\n":
                    pass
                return body
            body += self._read_exact(size)
            self._read_exact(2)

    def is_closed_by_peer(self, wait=5.0):
        """True when the peer closed (or reset) the connection within `wait` seconds."""
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True
        finally:
            self.sock.settimeout(self.timeout)
        if data:
            self.buffer += data
            return False
        return True


def request(host, port, raw, head_request=False, timeout=DEFAULT_TIMEOUT, check_close=False):
    """Sends `raw` on a new connection and returns (response, closed_by_peer_afterwards).

    With check_close, waits up to 2 s to learn whether the server closed the connection
    after answering; otherwise `closed` is None.
    """
    with RawConnection(host, port, timeout) as conn:
        conn.send(raw)
        response = conn.read_response(head_request=head_request)
        closed = conn.is_closed_by_peer(wait=2.0) if check_close else None
        return response, closed


def build(method, target, headers=(), body=b"", host="sapl.test"):
    """Bytes of a well-formed request; `headers` is a list of (name, value) sent as given."""
    lines = ["%s %s HTTP/1.1" % (method, target), "Host: %s" % host]
    names = {name.lower() for name, _ in headers}
    lines += ["%s: %s" % (name, value) for name, value in headers]
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def wait_for_port(host, port, timeout, alive=lambda: True):
    """Waits until `port` accepts a TCP connection; False on timeout or when `alive()` fails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            return False
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def fetch(server, method, target, headers=(), body=b"", host="sapl.test", check_close=False):
    """One request to a test server (anything with .host and .port) on a new connection."""
    response, closed = request(
        server.host,
        server.port,
        build(method, target, headers, body, host=host),
        head_request=(method == "HEAD"),
        check_close=check_close,
    )
    if check_close:
        return response, closed
    return response


def unix_raw(sock_path, raw, timeout=DEFAULT_TIMEOUT):
    """Sends raw bytes straight to a unix socket (Gunicorn) and returns all it answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(sock_path)
        s.sendall(raw)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk
