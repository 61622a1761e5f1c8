"""The descriptor budget: the open-file limit raised at start, and running out of descriptors logged
once, not as a traceback per failed accept.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support.webclient import connect, read_response

REPO = Path(__file__).resolve().parents[2]


def test_the_descriptor_limit_is_raised_and_running_out_logs_one_line_not_a_traceback_each(
    tmp_path: Path,
) -> None:
    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (100, 128))

    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fdstarve"],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=low_limit,  # noqa: PLW1509 - nothing else runs in the child
    )  # fmt: skip
    assert process.stdin is not None and process.stdout is not None
    stderr = process.stderr
    assert stderr is not None
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(iter(stderr.readline, "")))
    reader.start()
    try:
        port = int(process.stdout.readline().split()[1])
        process.stdin.write("fill\n")
        process.stdin.flush()
        assert process.stdout.readline().startswith("filled")
        waiting = [connect(port) for _ in range(3)]  # queued by the kernel, not accepted
        for sock in waiting:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        deadline = time.monotonic() + 20
        while not any("cannot accept" in line for line in log) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)  # asyncio retries each second: at least one retry fails meanwhile
        process.stdin.write("free\n")
        process.stdin.flush()
        assert process.stdout.readline() == "freed\n"
        for sock in waiting:  # accepted and served once descriptors are back
            assert read_response(sock.makefile("rb")).status == 200
            sock.close()
        # The end is logged once no accept has failed for the hold-down (web/statelog.py).
        for _ in range(600):  # a bound of 30 s, not a goal
            if any("accepting connections again" in line for line in log):
                break
            time.sleep(0.05)
    finally:
        if process.stdin:
            process.stdin.write("quit\n")
            process.stdin.close()
        process.wait(timeout=20)
        reader.join(timeout=5)
    text = "".join(log)
    assert "open-file limit raised from 100 to 128" in text
    assert "max_connections 1000 lowered to 96: the open-file limit is 128" in text
    # asyncio's default handler logs each failed accept with its traceback: hundreds here.
    assert text.count("cannot accept connections") == 1, text
    assert text.count("accepting connections again") == 1, text
    assert "Traceback" not in text
    assert len(log) < 10, text
