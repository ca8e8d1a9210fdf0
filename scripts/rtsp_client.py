"""A bare RTSP client for the bench and soak scripts: one connection, DESCRIBE, SETUP over TCP
(interleaved channels 0-1), PLAY, then the interleaved packets as they come. No decoding."""
import socket


class Client:
    def __init__(self, bind, camera, timeout=10):
        host, port = bind.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.file = self.sock.makefile("rb")
        self.cseq = 0
        self.url = f"rtsp://{bind}/{camera}"
        self.request("DESCRIBE", self.url)
        setup = self.request("SETUP", self.url + "/trackID=0", "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n")
        self.session = setup["session"].split(";")[0]
        self.request("PLAY", self.url, f"Session: {self.session}\r\n")

    def request(self, method, uri, extra=""):
        """Sends a request; its response's headers (lower-case names). The body and any
        interleaved packets that come before the response are skipped."""
        self.cseq += 1
        self.sock.sendall(f"{method} {uri} RTSP/1.0\r\nCSeq: {self.cseq}\r\n{extra}\r\n".encode())
        while True:
            first = self.file.read(1)
            if first != b"$":
                break
            self._rest_of_packet()
        head = {}
        line = (first + self.file.readline()).decode()
        while line not in ("\r\n", ""):
            if ":" in line:
                k, v = line.split(":", 1)
                head[k.strip().lower()] = v.strip()
            line = self.file.readline().decode()
        self.file.read(int(head.get("content-length", 0)))
        return head

    def keepalive(self):
        """GET_PARAMETER in the session, as players send it to stay within its timeout."""
        self.request("GET_PARAMETER", self.url, f"Session: {self.session}\r\n")

    def _rest_of_packet(self):
        hdr = self.file.read(3)
        if len(hdr) < 3:
            raise RuntimeError("the RTSP stream ended")
        return hdr[0], self.file.read(int.from_bytes(hdr[1:], "big"))

    def packet(self):
        """The next interleaved packet: (channel, bytes); raises when the stream ends."""
        if self.file.read(1) != b"$":
            raise RuntimeError("the RTSP stream ended")
        return self._rest_of_packet()

    def close(self):
        self.sock.close()
