"""A web-style crawler: many coroutine works at once on a couple of worker threads.

Run it with ``python examples/crawler.py``. It starts a small web site on
localhost (the standard library's ``http.server``, in a thread, answering each
page after a 50 ms delay, like a slow remote server), then crawls it from its
first page: every page fetched is a coroutine work that opens an asyncio
stream, and its links become new works. Two worker threads keep hundreds of
requests in flight, so 200 pages of 50 ms each take well under a second
instead of ten.

The crawler itself is asyncio code: with ``awaitable=True`` the futures are
``asyncio.Future``s, so ``asyncio.wait`` can tell which pages came back first.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aplex

PAGES = 200
LINKS_PER_PAGE = 4
SERVER_DELAY = 0.05  # seconds the server waits before each answer


# -- the site: page n links to a few pages further on -------------------------


class SiteHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        match = re.fullmatch(r"/page/(\d+)", self.path)
        if match is None:
            self.send_error(404)
            return
        number = int(match.group(1))
        links = "".join(
            f'<a href="/page/{(number * LINKS_PER_PAGE + k) % PAGES}">next</a>'
            for k in range(1, LINKS_PER_PAGE + 1)
        )
        body = f"<html><title>page {number}</title><body>{links}</body></html>".encode()
        time.sleep(SERVER_DELAY)
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the example's output to the crawler's


class Site(ThreadingHTTPServer):
    daemon_threads = True
    # Hundreds of connections arrive at once: the default backlog of 5 would
    # make the kernel drop some, and the client retry a second later.
    request_queue_size = 512


# -- the work: runs on a worker's event loop ----------------------------------


async def fetch(host: str, port: int, path: str) -> tuple[str, list[str]]:
    """GET ``path`` with a bare HTTP/1.0 request; return its title and links."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        response = (await reader.read()).decode()  # HTTP/1.0: read to end of stream
    finally:
        writer.close()
        await writer.wait_closed()
    status = response.split(" ", 2)[1]
    if status != "200":
        raise RuntimeError(f"GET {path}: HTTP {status}")
    title = re.search(r"<title>(.*?)</title>", response).group(1)
    return title, re.findall(r'href="([^"]+)"', response)


# -- the crawler: asyncio code in the main thread -----------------------------


async def crawl(host: str, port: int) -> dict[str, str]:
    titles: dict[str, str] = {}
    seen = {"/page/0"}
    async with aplex.ThreadAsyncPoolExecutor(pool_size=2, awaitable=True) as pool:
        pending = {pool.submit(fetch, host, port, "/page/0"): "/page/0"}
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                path = pending.pop(future)
                title, links = future.result()
                titles[path] = title
                for link in links:
                    if link not in seen:
                        seen.add(link)
                        pending[pool.submit(fetch, host, port, link)] = link
    return titles


def main() -> None:
    server = Site(("127.0.0.1", 0), SiteHandler)
    threading.Thread(target=server.serve_forever, name="site", daemon=True).start()
    host, port = server.server_address[:2]
    try:
        started = time.perf_counter()
        titles = asyncio.run(crawl(host, port))
        elapsed = time.perf_counter() - started
    finally:
        server.shutdown()
        server.server_close()
    print(
        f"crawled {len(titles)} pages in {elapsed:.2f} s "
        f"(one at a time: {len(titles) * SERVER_DELAY:.0f} s at least)"
    )
    print("a few titles:", ", ".join(sorted(titles.values())[:3]))


if __name__ == "__main__":
    main()
