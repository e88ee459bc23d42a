#!/usr/bin/env python3
"""A tiny HTTP/1.1 proxy that answers every request DELAY_MS late.

Usage: delay_proxy.py LISTEN_PORT UPSTREAM_PORT DELAY_MS

Listens on 127.0.0.1:LISTEN_PORT and forwards each request on a client
connection, over one upstream keep-alive connection of its own, to
127.0.0.1:UPSTREAM_PORT, after sleeping DELAY_MS. It stands for a slow API
(the time an application server spends per page) in front of nginx.
Bodies are framed by Content-Length only, which is all that nginx serving
static files and the benchmark's clients use.
"""

import asyncio
import sys


async def read_message(reader):
    """One HTTP message (head and body) as bytes, or None at end of stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return head + body


async def serve(client_reader, client_writer, upstream_port, delay):
    up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
    try:
        while True:
            request = await read_message(client_reader)
            if request is None:
                break
            await asyncio.sleep(delay)
            up_writer.write(request)
            await up_writer.drain()
            response = await read_message(up_reader)
            if response is None:
                break
            client_writer.write(response)
            await client_writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        up_writer.close()
        client_writer.close()


async def main(listen_port, upstream_port, delay_ms):
    delay = delay_ms / 1000
    server = await asyncio.start_server(
        lambda r, w: serve(r, w, upstream_port, delay), "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
