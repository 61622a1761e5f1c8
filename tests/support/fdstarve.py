"""A web server in a process of its own whose descriptors a test can use up, to cause EMFILE.

Run as ``python -m tests.support.fdstarve`` (with a low RLIMIT_NOFILE set by the caller). It
prints ``port N`` once serving, then obeys one command per stdin line, answering on stdout:
``fill`` opens /dev/null until the process has no descriptor left (``filled K``), ``free``
closes them again (``freed``), ``quit`` stops the server and exits. Logs go to stderr.
"""

from __future__ import annotations

import logging
import os
import sys

from pg_runbook_exporter.exposition import EMPTY
from pg_runbook_exporter.web.server import WebServer


def main() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
    server = WebServer(
        listen_address="127.0.0.1:0", get_exposition=lambda: EMPTY, ready=lambda: (True, "")
    )
    print(f"port {server.start()}", flush=True)
    held: list[int] = []
    for line in sys.stdin:
        command = line.strip()
        if command == "fill":
            try:
                while True:
                    held.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                pass
            print(f"filled {len(held)}", flush=True)
        elif command == "free":
            for fd in held:
                os.close(fd)
            held.clear()
            print("freed", flush=True)
        elif command == "quit":
            break
    server.stop()


if __name__ == "__main__":
    main()
