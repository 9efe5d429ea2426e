"""tests/support/connections.py: many connections to one HTTP(S) server, for
the connection specs (tests/server_spec.lua, tests/sandbox_spec.lua) and the
sandbox bench (scripts/bench/sandbox.lua). Independent of quan's own code.

  python3 connections.py keepalive --port P [--tls CA] --clients N
      [--requests K] [--path /x] [--ramp S] [--hold S] [--ready FILE]
    opens N connections (all at once, or spread over --ramp seconds), sends
    K requests on each (keep-alive, one after another); with --hold, once
    every client is done writes "ready" to FILE, keeps them all open S
    seconds and sends one more request on each.

  python3 connections.py slowloris --port P [--tls CA] --clients N
      [--interval S] [--duration D] [--silent] [--reconnect] [--ready FILE]
    opens N connections that send a request line, then one header line every
    S seconds, never ending the headers (--silent: send nothing at all);
    writes "ready" to FILE once all are open, stops after D seconds (or at
    SIGTERM). With --reconnect a connection the server closed is opened
    again.

Each prints one JSON object on stdout: what it saw (counts of answers,
errors by kind, connections the server closed and after how long).
"""
import argparse
import asyncio
import json
import signal
import ssl
import sys
import time


def connector(args):
    ctx = None
    if args.tls:
        ctx = ssl.create_default_context(cafile=args.tls)

    async def connect():
        if ctx is None:
            return await asyncio.open_connection(args.host, args.port)
        return await asyncio.open_connection(args.host, args.port, ssl=ctx, server_hostname=args.host,
                                             ssl_handshake_timeout=args.timeout)
    return connect


def kind(exc):
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, ssl.SSLError):
        return "tls"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return "reset"
    if isinstance(exc, (asyncio.IncompleteReadError, EOFError)):
        return "closed"
    if isinstance(exc, OSError):
        return "os:" + (exc.strerror or str(exc))
    return type(exc).__name__


async def http_request(reader, writer, host, path):
    """One GET on a kept-alive connection; returns the status."""
    writer.write(("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host)).encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return status


async def keepalive(args):
    connect = connector(args)
    errors, statuses = {}, {}
    ok = [0, 0]  # answered 200 in the first round, in the round after --hold

    def count(table, key):
        table[key] = table.get(key, 0) + 1

    async def client(i):
        if args.ramp:
            await asyncio.sleep(args.ramp * i / args.clients)
        try:
            reader, writer = await asyncio.wait_for(connect(), args.timeout)
        except Exception as exc:  # noqa: BLE001 - every failure is counted by kind
            count(errors, "connect:" + kind(exc))
            return None
        try:
            for _ in range(args.requests):
                status = await asyncio.wait_for(http_request(reader, writer, args.host, args.path), args.timeout)
                count(statuses, str(status))
                if status == 200:
                    ok[0] += 1
        except Exception as exc:  # noqa: BLE001
            count(errors, "request:" + kind(exc))
            writer.close()
            return None
        return reader, writer

    t0 = time.monotonic()
    conns = await asyncio.gather(*(client(i) for i in range(args.clients)))
    elapsed = time.monotonic() - t0
    live = [c for c in conns if c]
    result = {"clients": args.clients, "connected": args.clients - sum(v for k, v in errors.items()
                                                                       if k.startswith("connect:")),
              "ok": ok[0], "statuses": statuses, "errors": errors, "seconds": round(elapsed, 3)}
    if args.hold is not None:
        if args.ready:
            with open(args.ready, "w") as f:
                f.write("ready\n")
        await asyncio.sleep(args.hold)
        again = {}

        async def once(reader, writer):
            try:
                status = await asyncio.wait_for(http_request(reader, writer, args.host, args.path), args.timeout)
                if status == 200:
                    ok[1] += 1
            except Exception as exc:  # noqa: BLE001
                count(again, kind(exc))

        await asyncio.gather(*(once(r, w) for r, w in live))
        result["held"] = len(live)
        result["ok_after_hold"] = ok[1]
        result["errors_after_hold"] = again
    for _, writer in live:
        writer.close()
    return result


async def slowloris(args):
    connect = connector(args)
    stats = {"opened": 0, "failed": {}, "closed_by_server": 0, "lifetimes": [], "open": 0, "max_open": 0}
    deadline = time.monotonic() + args.duration
    opened_all = asyncio.Event()
    first_round = [0]

    def first_done():
        first_round[0] += 1
        if first_round[0] == args.clients:
            opened_all.set()

    async def one():
        counted = False
        while time.monotonic() < deadline:
            try:
                reader, writer = await asyncio.wait_for(connect(), args.timeout)
            except Exception as exc:  # noqa: BLE001
                key = kind(exc)
                stats["failed"][key] = stats["failed"].get(key, 0) + 1
                if not counted:
                    counted = True
                    first_done()
                if not args.reconnect:
                    return
                await asyncio.sleep(0.1)
                continue
            stats["opened"] += 1
            stats["open"] += 1
            stats["max_open"] = max(stats["max_open"], stats["open"])
            if not counted:
                counted = True
                first_done()
            start = time.monotonic()
            closed = False
            try:
                if not args.silent:
                    writer.write(("GET / HTTP/1.1\r\nHost: %s\r\n" % args.host).encode())
                while time.monotonic() < deadline:
                    if not args.silent:
                        writer.write(b"X-Slow: 1\r\n")
                        await writer.drain()
                    # the server's close shows as the end of the stream
                    try:
                        data = await asyncio.wait_for(reader.read(1), min(args.interval, deadline - time.monotonic()))
                    except asyncio.TimeoutError:
                        continue
                    closed = True  # an answer or the end: either way the server gave up on us
                    break
            except Exception:  # noqa: BLE001 - a reset is the server closing too
                closed = True
            stats["open"] -= 1
            if closed:
                stats["closed_by_server"] += 1
                stats["lifetimes"].append(time.monotonic() - start)
            writer.close()
            if not closed or not args.reconnect:
                return

    async def ready():
        await opened_all.wait()
        if args.ready:
            with open(args.ready, "w") as f:
                f.write("ready %d\n" % stats["open"])

    waiter = asyncio.ensure_future(ready())
    tasks = [asyncio.ensure_future(one()) for _ in range(args.clients)]
    # SIGTERM ends the run early, with the result of what happened so far
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, lambda: [t.cancel() for t in tasks])
    await asyncio.gather(*tasks, return_exceptions=True)
    waiter.cancel()
    lifetimes = stats.pop("lifetimes")
    stats["open_at_end"] = stats.pop("open")
    if lifetimes:
        stats["lifetime_min"] = round(min(lifetimes), 3)
        stats["lifetime_max"] = round(max(lifetimes), 3)
    return stats


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["keepalive", "slowloris"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls", help="CA file: connect over TLS")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--requests", type=int, default=1)
    parser.add_argument("--path", default="/")
    parser.add_argument("--ramp", type=float, default=0.0)
    parser.add_argument("--hold", type=float)
    parser.add_argument("--ready")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--silent", action="store_true")
    parser.add_argument("--reconnect", action="store_true")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    run = keepalive if args.mode == "keepalive" else slowloris
    result = asyncio.run(run(args))
    json.dump(result, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
