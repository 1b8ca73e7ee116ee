"""An MCP server built with the official Python SDK, for the mcp-proxy tests.

    server.py stdio
    server.py sse
    server.py streamable-http [--stateless] [--json]

HTTP transports listen on a free loopback port and print `ready port=N`
once the socket accepts connections.
"""

import argparse
import socket
import sys

import anyio
import uvicorn
from mcp.server import MCPServer
from mcp.shared.exceptions import MCPError

server = MCPServer("aforo-test-server")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Say it back."""
    return text


@server.tool()
def fail(reason: str) -> str:
    """Always fails: a tool error (isError), not a protocol error."""
    raise ValueError(f"failed on purpose: {reason}")


@server.tool()
def reject(reason: str) -> str:
    """Always refused with a JSON-RPC error: a protocol error, not a tool error."""
    raise MCPError(-32602, f"refused on purpose: {reason}")


@server.tool()
async def slow(seconds: float) -> str:
    """Answers after a while."""
    await anyio.sleep(seconds)
    return f"slept {seconds}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("transport", choices=["stdio", "sse", "streamable-http"])
    parser.add_argument("--stateless", action="store_true")
    parser.add_argument("--json", action="store_true", help="JSON responses instead of SSE")
    args = parser.parse_args()
    if args.transport == "stdio":
        server.run("stdio")
        return
    if args.transport == "sse":
        app = server.sse_app()
    else:
        app = server.streamable_http_app(stateless_http=args.stateless, json_response=args.json)
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets
    # only when the listening socket says TCP (as uvicorn's own bind does);
    # without it, replies wait ~40 ms for delayed ACKs on reused connections.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    print(f"ready port={sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning")
    anyio.run(lambda: uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    sys.exit(main())
