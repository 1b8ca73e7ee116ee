"""An MCP client built with the official Python SDK, for the mcp-proxy tests.

    client.py --calls JSON (--stdio JSON | --sse URL | --http URL)
              [--name AGENT] [--mode auto|legacy] [--header NAME=VALUE]

--calls is a JSON list of [tool, arguments]; --stdio the server command as a
JSON list of strings. Prints one JSON line per call,
in order: {"tool", "result"} or {"tool", "error": {"code", "message"}}, then
`{"done": true}`, so a test can compare what the client saw with and without
the proxy.
"""

import argparse
import json
import sys

import anyio
import httpx2
from mcp import Client, Implementation, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


def transport(args):
    headers = dict(h.split("=", 1) for h in args.header)
    if args.stdio:
        command = json.loads(args.stdio)
        return StdioServerParameters(command=command[0], args=command[1:])
    if args.sse:
        return sse_client(args.sse, headers=headers or None)
    client = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300))
    return streamable_http_client(args.http, http_client=client)


async def run(args) -> None:
    calls = json.loads(args.calls)
    info = Implementation(name=args.name, version="1.0.0")
    async with Client(transport(args), client_info=info, mode=args.mode, cache=None) as client:
        for tool, arguments in calls:
            try:
                result = await client.call_tool(tool, arguments)
                line = {"tool": tool, "result": result.model_dump(mode="json", by_alias=True, exclude_none=True)}
            except MCPError as err:
                line = {"tool": tool, "error": {"code": err.code, "message": err.message}}
            print(json.dumps(line, sort_keys=True), flush=True)
    print(json.dumps({"done": True}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", required=True)
    parser.add_argument("--name", default="aforo-test-client")
    parser.add_argument("--mode", default="auto")
    parser.add_argument("--header", action="append", default=[])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--stdio")
    where.add_argument("--sse")
    where.add_argument("--http")
    anyio.run(run, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
