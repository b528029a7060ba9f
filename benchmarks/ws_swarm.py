"""Many WebSocket (or raw pub/sub) listeners in one asyncio process, for event_latency.

`python -m benchmarks.ws_swarm ws URL KEY IDS_FILE OUT_FILE` opens one socket per
workflow id in IDS_FILE, subscribes each to its own workflow, prints READY once all
are subscribed, and records when each `job.progress` event arrives. `raw REDIS_URL
CHANNEL OUT_FILE` listens to a bare pub/sub channel instead. Both stop when stdin
closes and write their receipts as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Ping, Request, TextMessage

Receipts = dict[str, int]


async def socket_client(url: str, key: str, workflow_id: str, receipts: Receipts,
                        subscribed: asyncio.Queue[str]) -> None:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    conn = WSConnection(ConnectionType.CLIENT)
    writer.write(conn.send(Request(host=parts.netloc, target=f"/ws?api_key={key}")))
    buffered = ""
    while True:
        data = await reader.read(65536)
        if not data:
            return
        conn.receive_data(data)
        for event in conn.events():
            if isinstance(event, AcceptConnection):
                writer.write(conn.send(TextMessage(json.dumps(
                    {"action": "subscribe", "workflow_id": workflow_id}))))
            elif isinstance(event, Ping):
                writer.write(conn.send(event.response()))
            elif isinstance(event, TextMessage):
                buffered += event.data
                if event.message_finished:
                    record(json.loads(buffered), receipts, subscribed)
                    buffered = ""


def record(message: dict[str, Any], receipts: Receipts, subscribed: asyncio.Queue[str]) -> None:
    now = time.time_ns()
    if message["type"] == "subscribed":
        subscribed.put_nowait(message["workflow_id"])
    elif message["type"] == "job.progress":
        receipts[f"{message['job_id']}:{message['data']['progress']}"] = now


async def run_sockets(url: str, key: str, ids: list[str], out: Path) -> None:
    receipts: Receipts = {}
    subscribed: asyncio.Queue[str] = asyncio.Queue()
    clients = []
    for workflow_id in ids:
        clients.append(asyncio.create_task(socket_client(url, key, workflow_id, receipts,
                                                         subscribed)))
        await asyncio.sleep(0.002)  # a connection storm would test the listen backlog
    for _ in ids:
        await subscribed.get()
    print("READY", flush=True)
    await asyncio.to_thread(sys.stdin.read)
    out.write_text(json.dumps(receipts))
    for client in clients:
        client.cancel()


async def run_raw(redis_url: str, channel: str, out: Path) -> None:
    """Latency is measured in the payload: the publisher stamps it."""
    client = redis.asyncio.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    await pubsub.subscribe(channel)
    latencies: list[int] = []

    async def listen() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                latencies.append(time.time_ns() - json.loads(message["data"])["t0"])

    listener = asyncio.create_task(listen())
    print("READY", flush=True)
    await asyncio.to_thread(sys.stdin.read)
    listener.cancel()
    out.write_text(json.dumps(latencies))
    await client.aclose()


def main() -> None:
    mode, *args = sys.argv[1:]
    if mode == "ws":
        url, key, ids_file, out = args
        asyncio.run(run_sockets(url, key, json.loads(Path(ids_file).read_text()), Path(out)))
    else:
        redis_url, channel, out = args
        asyncio.run(run_raw(redis_url, channel, Path(out)))


if __name__ == "__main__":
    main()
