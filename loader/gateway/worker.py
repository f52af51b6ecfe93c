"""A gateway process of `loader serve`: uvicorn on listening sockets its parent opened and passed down,
so that processes can be replaced (SIGHUP) while the sockets, and every connection queued on them,
stay open. `python -m loader.gateway.worker PARENT_PID READY_FD ADMIN_PORT FD…`, settings on stdin.

It writes one byte to READY_FD once it accepts. SIGTERM: stop accepting, answer what is in flight and
what arrives on open connections (each answer then closes its connection), exit.
"""

from __future__ import annotations

import os
import signal
import socket
import sys

import uvicorn

from loader import logs
from loader.gateway.draining import DrainingProtocol
from loader.process import die_with_parent
from loader.settings import Settings

KEEP_ALIVE_S = 5
# Past this, a draining process cancels what it still runs; every request is answered long before.
GRACEFUL_S = 30


class ReadyServer(uvicorn.Server):
    """uvicorn's server, telling its parent when it accepts."""

    def __init__(self, config: uvicorn.Config, ready_fd: int) -> None:
        super().__init__(config)
        self.ready_fd = ready_fd

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            os.write(self.ready_fd, b"1")
        os.close(self.ready_fd)


def main() -> None:
    die_with_parent()
    if os.getppid() != int(sys.argv[1]):
        sys.exit(0)
    # A reload is the parent's to carry out: a SIGHUP sent to the whole process group must not end us.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    ready_fd, admin_port = int(sys.argv[2]), int(sys.argv[3])
    sockets = [socket.socket(fileno=int(fd)) for fd in sys.argv[4:]]
    settings = Settings.from_json(sys.stdin.read())
    logs.setup(settings.log_json)
    from loader.gateway.app import create_app

    config = uvicorn.Config(
        create_app(settings, admin_port=admin_port or None),
        access_log=False,  # ours (loader.access) never prints the query string, which holds the key
        log_config=None,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=GRACEFUL_S,
        http=DrainingProtocol,
        limit_concurrency=4096,  # past this, new requests get 503 (Customer.io retries them)
    )
    ReadyServer(config, ready_fd).run(sockets=sockets)


if __name__ == "__main__":
    main()
