"""A bare RTSP client for the bench and soak scripts: one connection, DESCRIBE, SETUP over TCP
(interleaved channels 0-1), PLAY, then the interleaved packets as they come. No decoding."""
import socket


class Client:
    def __init__(self, bind, camera, timeout=10):
        host, port = bind.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.file = self.sock.makefile("rb")
        self.cseq = 0
        url = f"rtsp://{bind}/{camera}"
        self.request("DESCRIBE", url)
        session = self.request("SETUP", url + "/trackID=0", "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n")["session"]
        self.request("PLAY", url, f"Session: {session.split(';')[0]}\r\n")

    def request(self, method, uri, extra=""):
        """Sends a request; its response's headers (lower-case names); the body is skipped."""
        self.cseq += 1
        self.sock.sendall(f"{method} {uri} RTSP/1.0\r\nCSeq: {self.cseq}\r\n{extra}\r\n".encode())
        head = {}
        while True:
            line = self.file.readline().decode()
            if line in ("\r\n", ""):
                break
            if ":" in line:
                k, v = line.split(":", 1)
                head[k.strip().lower()] = v.strip()
        self.file.read(int(head.get("content-length", 0)))
        return head

    def packet(self):
        """The next interleaved packet: (channel, bytes); raises when the stream ends."""
        hdr = self.file.read(4)
        if len(hdr) < 4 or hdr[:1] != b"$":
            raise RuntimeError("the RTSP stream ended")
        return hdr[1], self.file.read(int.from_bytes(hdr[2:], "big"))

    def close(self):
        self.sock.close()
