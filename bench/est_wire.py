"""A lean EST client for the floor benchmark: HTTP/1.1 over one asyncio TLS stream per device,
requests written by hand, answers read by their Content-Length.

Why not httpx: driving the CA simulator on the same 2 cores, httpx's AsyncClient spent 3.2 ms
of CPU per enrollment (the CA 2.1 ms), so the client, not the CA, set the pace; this one spends
1.5 ms. It speaks only what the CA simulator's EST server answers (aiohttp: a Content-Length on
every answer, keep-alive), and says so when an answer is anything else.
"""

from __future__ import annotations

import asyncio
import base64
import ssl

from shared.protocols.est import PKCS10

#: Longest answer read; a certificate chain is a few KiB.
MAX_ANSWER_BYTES = 1024 * 1024


class EstFailure(Exception):
    """An exchange that did not give what an enrollment needs: what happened, for the report."""


class EstConnection:
    """One TLS connection to an EST server, opened by :meth:`open` and kept alive for the
    device's requests."""

    def __init__(self, host: str, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.host, self.port, self.reader, self.writer = host, port, reader, writer

    @classmethod
    async def open(cls, host: str, port: int, tls: ssl.SSLContext) -> EstConnection:
        reader, writer = await asyncio.open_connection(host, port, ssl=tls)
        return cls(host, port, reader, writer)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:  # the server closed first: nothing left to say
            pass

    async def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        return await self._exchange(f"GET {path} HTTP/1.1\r\n{self._host()}\r\n".encode())

    async def post_csr(self, path: str, csr_base64: bytes, *, user: str, password: str) -> tuple[int, dict[str, str],
                                                                                                   bytes]:
        credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
        head = (f"POST {path} HTTP/1.1\r\n{self._host()}Content-Type: {PKCS10}\r\n"
                f"Content-Transfer-Encoding: base64\r\nAuthorization: Basic {credentials}\r\n"
                f"Content-Length: {len(csr_base64)}\r\n\r\n")
        return await self._exchange(head.encode() + csr_base64)

    def _host(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"Host: {host}:{self.port}\r\n"

    async def _exchange(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        """Send one request; the answer's status, headers (names lower-case) and body."""
        self.writer.write(request)
        status_line = await self.reader.readline()
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise EstFailure(f"not an HTTP/1.x answer: {status_line[:100]!r}")
        headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" not in headers:
            raise EstFailure(f"an answer without Content-Length ({headers.get('transfer-encoding', 'no length')}); "
                             "this client reads only answers that give their length")
        length = int(headers["content-length"])
        if length > MAX_ANSWER_BYTES:
            raise EstFailure(f"an answer of {length} bytes; a certificate chain is a few KiB")
        return int(parts[1]), headers, await self.reader.readexactly(length)
