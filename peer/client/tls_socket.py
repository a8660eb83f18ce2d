"""The client's TLS: a socket that reads every record already arrived, not one per call.

OpenSSL's SSL_read returns at most one TLS record (16 KiB), so over https:// each read of
httpcore's (64 KiB asked) brought a quarter of what a plain socket's does, and every read
costs the HTTP stack (h11, httpcore, httpx) its Python per-chunk work: downloading over TLS
cost the client 1.9x the CPU per MB of plain HTTP. `RecordBatchingSocket.recv` goes on
reading, without blocking, the records already in the socket, up to what was asked, after a
full record (after a short one, a small reply's, it does not look: that would cost a failed
read per reply).
"""

from __future__ import annotations

import ssl

import httpx

RECORD = 16 * 1024  # plaintext of a full TLS record: a shorter one likely ended a write


class RecordBatchingSocket(ssl.SSLSocket):
    """An SSLSocket whose `recv` returns up to `buflen` of what has arrived, across records.
    An error met after the first record is raised by the next call, after the data before it
    has been returned."""

    _deferred_error: OSError | None = None

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        if self._deferred_error is not None:
            error, self._deferred_error = self._deferred_error, None
            raise error
        first = super().recv(buflen, flags)
        if len(first) < RECORD or len(first) >= buflen:
            return first  # a short record (a small reply) rarely has another behind it
        parts = [first]
        wanted = buflen - len(first)
        timeout = self.gettimeout()
        self.settimeout(0.0)
        try:
            while wanted > 0:
                try:
                    more = super().recv(wanted)
                except (ssl.SSLWantReadError, BlockingIOError):
                    break
                except OSError as error:
                    self._deferred_error = error
                    break
                if not more:  # the end: the next call returns it again
                    break
                parts.append(more)
                wanted -= len(more)
        finally:
            self.settimeout(timeout)
        return b"".join(parts)


def client_tls_context(ca: str | None) -> ssl.SSLContext:
    """How https:// peers are checked: signed by the cluster CA in `ca`, else by the CAs httpx
    trusts by default; its sockets are RecordBatchingSockets."""
    if ca is None:
        context = httpx.create_ssl_context()
    else:
        try:
            context = ssl.create_default_context(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"bad CA file {ca!r}: {exc}") from None
    context.sslsocket_class = RecordBatchingSocket
    return context
