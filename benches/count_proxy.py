#!/usr/bin/env python3
"""A counting HTTP proxy for benches/fleet.sh, and the table it prints.

    count_proxy.py serve UPSTREAM_HOST:PORT PORT_FILE
        Listens on a free loopback port (written to PORT_FILE) and forwards every
        request to the S3 server: headers as they came (the Host header too, so
        SigV4 signatures still verify; hop-by-hop ones aside), bodies streamed
        both ways. Counts requests by kind (GET, HEAD, LIST = a GET on the bucket
        itself, PUT, other), by status, their bytes on the wire in each
        direction, and requests per wall-clock second. A GET whose
        If-None-Match matches the object's ETag is answered 304 Not Modified
        without a body, as S3 does (s3s-fs ignores the header; set
        FLEET_EMULATE_304=0 to relay its answer instead). GET /__counts answers
        the counts as JSON (not forwarded). SIGTERM writes them to
        PORT_FILE.counts.json and exits.

    count_proxy.py row LABEL NODES SECONDS BEFORE.json AFTER.json
        One line of the table: what happened between two snapshots, per node.
    count_proxy.py header
        The table's header.

Python standard library only.
"""

import http.client
import http.server
import json
import os
import signal
import socket
import sys
import threading
import time
from urllib.parse import urlsplit

KINDS = ("GET", "HEAD", "LIST", "PUT", "other")
CHUNK = 64 * 1024
# Not forwarded as such: they describe one hop, not the request.
# What a 304 keeps of the object's headers (as S3 sends them).
KEPT_ON_304 = {"etag", "last-modified", "date", "server", "x-amz-request-id", "x-amz-id-2"}
EMULATE_304 = os.environ.get("FLEET_EMULATE_304", "1") != "0"
HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.kinds = {k: {"requests": 0, "bytes_up": 0, "bytes_down": 0, "status": {}} for k in KINDS}
        self.per_second = {}

    def add(self, kind, status, up, down):
        now = str(int(time.time()))
        with self.lock:
            k = self.kinds[kind]
            k["requests"] += 1
            k["bytes_up"] += up
            k["bytes_down"] += down
            s = str(status)
            k["status"][s] = k["status"].get(s, 0) + 1
            self.per_second[now] = self.per_second.get(now, 0) + 1

    def snapshot(self):
        with self.lock:
            return json.loads(json.dumps({"kinds": self.kinds, "per_second": self.per_second}))


COUNTS = Counts()


def kind_of(method, path):
    parts = [p for p in urlsplit(path).path.split("/") if p]
    if method == "GET":
        # Path-style addressing: /bucket?list-type=2… is a listing, /bucket/key a GET.
        return "LIST" if len(parts) <= 1 else "GET"
    if method in ("HEAD", "PUT"):
        return method
    return "other"


def head_bytes(first_line, headers):
    return len(first_line) + 2 + sum(len(k) + len(v) + 4 for k, v in headers) + 2


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream_addr = None

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        self.upstream = None

    def finish(self):
        super().finish()
        if self.upstream is not None:
            self.upstream.close()

    def _upstream(self):
        if self.upstream is None:
            host, port = self.upstream_addr
            self.upstream = http.client.HTTPConnection(host, port, timeout=300)
        return self.upstream

    def _counts(self):
        body = json.dumps(COUNTS.snapshot()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _relay_request_body(self, conn):
        """Stream the client's body upstream; returns its size on the wire."""
        sent = 0
        te = self.headers.get("Transfer-Encoding", "").lower()
        if "chunked" in te:
            # Pass the chunked framing through as it is (the header is forwarded too).
            while True:
                line = self.rfile.readline()
                conn.send(line)
                sent += len(line)
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while True:  # trailers, then the empty line
                        t = self.rfile.readline()
                        conn.send(t)
                        sent += len(t)
                        if t in (b"\r\n", b"\n", b""):
                            return sent
                sent += self._relay(conn, size + 2)  # data and its CRLF
        return self._relay(conn, int(self.headers.get("Content-Length") or 0))

    def _relay(self, conn, left):
        """Copy `left` bytes of the client's body upstream; returns `left`."""
        n = left
        while left:
            b = self.rfile.read(min(CHUNK, left))
            if not b:
                raise ConnectionError("client closed mid-body")
            conn.send(b)
            left -= len(b)
        return n

    def _not_modified(self, resp):
        """S3 answers a GET whose If-None-Match holds the object's ETag with
        304 Not Modified and no body; s3s-fs ignores the header and sends the
        object. With EMULATE_304 the proxy answers as S3 would."""
        inm = self.headers.get("If-None-Match")
        if not EMULATE_304 or self.command != "GET" or not inm or resp.status != 200:
            return False
        etag = resp.getheader("ETag")
        return etag is not None and any(t.strip() in (etag, "*") for t in inm.split(","))

    def _forward(self):
        if self.path.startswith("/__counts"):
            return self._counts()
        kind = kind_of(self.command, self.path)
        up = head_bytes(self.requestline, self.headers.items())
        conn = self._upstream()
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            chunked_in = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
            for k, v in self.headers.items():
                if k.lower() in HOP and not (chunked_in and k.lower() == "transfer-encoding"):
                    continue
                conn.putheader(k, v)
            conn.endheaders()
            up += self._relay_request_body(conn)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException):
            conn.close()
            self.upstream = None
            raise
        if self._not_modified(resp):
            resp.read()  # the body S3 would not have sent; keeps the connection usable
            headers = [(k, v) for k, v in resp.getheaders() if k.lower() in KEPT_ON_304]
            self.send_response_only(304, "Not Modified")
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.flush()
            if resp.will_close:
                conn.close()
                self.upstream = None
            COUNTS.add(kind, 304, up, head_bytes("HTTP/1.1 304 Not Modified", headers))
            return
        headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP]
        no_body = self.command == "HEAD" or resp.status in (204, 304) or resp.status < 200
        length = resp.getheader("Content-Length")
        rechunk = not no_body and length is None and resp.chunked
        if rechunk:
            headers.append(("Transfer-Encoding", "chunked"))
        elif not no_body and length is None:
            self.close_connection = True  # body runs until the upstream closes
        self.send_response_only(resp.status, resp.reason)
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        down = head_bytes(f"HTTP/1.1 {resp.status} {resp.reason}", headers)
        if not no_body:
            while True:
                b = resp.read1(CHUNK) if rechunk else resp.read(CHUNK)
                if not b:
                    break
                if rechunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
                else:
                    self.wfile.write(b)
                down += len(b)
            if rechunk:
                self.wfile.write(b"0\r\n\r\n")
        resp.close()
        if resp.will_close:
            conn.close()
            self.upstream = None
        self.wfile.flush()
        COUNTS.add(kind, resp.status, up, down)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_OPTIONS = do_PATCH = _forward


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        # A client that hung up (a killed sync) is no reason for a traceback.
        if not isinstance(sys.exc_info()[1], (ConnectionError, socket.timeout)):
            super().handle_error(request, client_address)


def serve(upstream, port_file):
    host, port = upstream.rsplit(":", 1)
    Handler.upstream_addr = (host, int(port))
    server = Server(("127.0.0.1", 0), Handler)

    def stop(*_):
        with open(port_file + ".counts.json", "w") as f:
            json.dump(COUNTS.snapshot(), f)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    # Renamed into place: whoever polls for the file never reads half of it.
    os.replace(port_file + ".tmp", port_file)
    server.serve_forever()


COLUMNS = (
    ("case", "<44"),
    ("nodes", ">5"),
    ("GET", ">6"),
    ("(304)", ">6"),
    ("HEAD", ">5"),
    ("LIST", ">5"),
    ("PUT", ">5"),
    ("other", ">5"),
    ("req/node", ">8"),
    ("KiB down/node", ">13"),
    ("KiB up/node", ">11"),
    ("seconds", ">8"),
    ("peak req/s", ">10"),
)


def line(values):
    return "  ".join(f"{v:{fmt}}" for v, (_, fmt) in zip(values, COLUMNS))


def header():
    print(line([c for c, _ in COLUMNS]))
    print(line(["-" * int(fmt[1:]) for _, fmt in COLUMNS]))


def row(label, nodes, seconds, before_file, after_file):
    with open(before_file) as f:
        before = json.load(f)
    with open(after_file) as f:
        after = json.load(f)
    nodes = int(nodes)
    d = {}
    for k in KINDS:
        a, b = after["kinds"][k], before["kinds"][k]
        d[k] = {x: a[x] - b[x] for x in ("requests", "bytes_up", "bytes_down")}
        d[k]["304"] = a["status"].get("304", 0) - b["status"].get("304", 0)
    total = sum(v["requests"] for v in d.values())
    down = sum(v["bytes_down"] for v in d.values())
    up = sum(v["bytes_up"] for v in d.values())
    per_second = {s: n - before["per_second"].get(s, 0) for s, n in after["per_second"].items()}
    peak = max(per_second.values(), default=0)

    def per(n):
        return f"{n / nodes:.2f}".rstrip("0").rstrip(".") if n else "0"

    print(
        line(
            [
                label,
                nodes,
                per(d["GET"]["requests"]),
                per(d["GET"]["304"]),
                per(d["HEAD"]["requests"]),
                per(d["LIST"]["requests"]),
                per(d["PUT"]["requests"]),
                per(d["other"]["requests"]),
                per(total),
                f"{down / 1024 / nodes:.1f}",
                f"{up / 1024 / nodes:.1f}",
                f"{float(seconds):.1f}",
                peak,
            ]
        )
    )


def main(argv):
    if len(argv) == 3 and argv[0] == "serve":
        serve(argv[1], argv[2])
    elif len(argv) == 6 and argv[0] == "row":
        row(*argv[1:])
    elif argv == ["header"]:
        header()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
