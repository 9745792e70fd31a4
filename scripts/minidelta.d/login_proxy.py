"""PyPI for minidelta's login node: an HTTP CONNECT proxy on the host's end of its veth.

The login node's network namespace has a route to the host and none beyond (no NAT here), while
Delta's login nodes reach PyPI. sshd hands every session `https_proxy=http://HOST_ADDR:PORT`, so
pip (and anything else that honours it) tunnels TLS through this process, which resolves and
connects from the host. Only CONNECT to port 443 is relayed; anything else gets 405 or 403.

    login_proxy.py --listen 10.78.0.1 --port 3128 --pid-file /run/minidelta/login-proxy.pid

Started and stopped by scripts/minidelta (login.sh); standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

ALLOWED_PORTS = {443}
HEADER_LIMIT = 16 * 1024  # bytes of request line and headers a client may send


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy reader to writer until either side closes."""
    try:
        while chunk := await reader.read(64 * 1024):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def refuse(writer: asyncio.StreamWriter, status: str) -> None:
    writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    writer.close()


async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
    """One client: `CONNECT host:443 HTTP/1.1`, headers, then bytes both ways."""
    try:
        head = await client_reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        client_writer.close()
        return
    method, _, rest = head.decode("latin-1").partition(" ")
    target = rest.split(" ", 1)[0]
    if method != "CONNECT":
        await refuse(client_writer, "405 Method Not Allowed")
        return
    host, _, port_text = target.rpartition(":")
    if not port_text.isdigit() or int(port_text) not in ALLOWED_PORTS or not host:
        await refuse(client_writer, "403 Forbidden")
        return
    try:
        upstream_reader, upstream_writer = await asyncio.wait_for(
            asyncio.open_connection(host.strip("[]"), int(port_text)), timeout=30
        )
    except (OSError, asyncio.TimeoutError) as error:
        print(f"CONNECT {target}: {error}", file=sys.stderr, flush=True)
        await refuse(client_writer, "502 Bad Gateway")
        return
    client_writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
    await client_writer.drain()
    await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))


async def serve(listen: str, port: int, pid_file: Path) -> None:
    server = await asyncio.start_server(handle, listen, port, limit=HEADER_LIMIT)
    pid_file.write_text(f"{os.getpid()}\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"relaying CONNECT :443 on {listen}:{port}", file=sys.stderr, flush=True)
    async with server:
        await stop.wait()
    pid_file.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="address to listen on (the host's end of the veth)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid-file", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.listen, args.port, args.pid_file))


if __name__ == "__main__":
    main()
