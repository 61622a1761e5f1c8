"""Request heads as llhttp parses them: the few fields the server routes and authorises on.

llhttp (Node's parser, via httptools) is strict where a hand-written parser tends not to be: a
bare CR, a NUL, a header name that is not a token, folded lines or both body framings are errors.
"""

from __future__ import annotations

import httptools

Request = tuple[bytes, bytes, bytes, bytes, bool]
"""method, path, Accept, Accept-Encoding, whether to close after answering"""
Head = tuple[Request, bytes | None, tuple[int, bytes] | None]
"""the request, its Authorization value, and the (status, body) to refuse it with, if any"""
ParseError = httptools.HttpParserError

_VERSIONS = ("1.1", "1.0")


class HeadReader:
    """llhttp's callback target for one connection; collects one request head at a time."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.head: Head | None = None
        self._clear()

    def _clear(self) -> None:
        self.url = b""
        self.accept = self.encoding = b""
        self.authorization: bytes | None = None
        self.hosts = 0
        self.body = False

    def feed(self, data: bytes | memoryview) -> Head | None:
        """Parse `data` (at most one head's end); the head it completed, if any.

        Raises `ParseError` for a malformed head.
        """
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self.head is not None:  # answered like any other, then closed
                request, authorization, error = self.head
                self.head = ((*request[:4], True), authorization, error)
        head, self.head = self.head, None
        return head

    def on_url(self, url: bytes) -> None:
        self.url += url  # may come in pieces when the head does

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"accept":
            self.accept = self.accept + b"," + value if self.accept else value
        elif name == b"accept-encoding":
            self.encoding = self.encoding + b"," + value if self.encoding else value
        elif name == b"authorization":
            self.authorization = value
        elif name == b"host":
            self.hosts += 1
        elif name in (b"content-length", b"transfer-encoding"):
            self.body = self.body or value.strip() != b"0"

    def on_headers_complete(self) -> None:
        parser = self.parser
        version = parser.get_http_version()
        target = self.url
        if target[:1] != b"/":
            scheme, _, rest = target.partition(b"://")  # absolute-form: keep only the path
            target = b"/" + rest.partition(b"/")[2] if scheme in (b"http", b"https") else b""
        # Bodies are never read: answer, then close instead of parsing what follows.
        close = version != "1.1" or self.body or not parser.should_keep_alive()
        request = (
            parser.get_method(),
            target.partition(b"?")[0],
            self.accept,
            self.encoding,
            close,
        )
        error = None
        if version not in _VERSIONS:
            error = (505 if version >= "2" else 400, b"HTTP/1.1 only\n")
        elif self.hosts != 1 and version == "1.1":
            error = (400, b"exactly one Host header is required\n")
        self.head = (request, self.authorization, error)
        self._clear()
