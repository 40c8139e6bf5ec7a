"""sse-starlette on uvicorn: an asyncio queue per stream, EventSourceResponse for the framing."""

import asyncio
from collections import defaultdict

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

subscribers = defaultdict(set)


async def sub(request):
    topic = request.query_params["topic"]
    q = asyncio.Queue()
    subscribers[topic].add(q)

    async def stream():
        try:
            while True:
                yield {"data": await q.get()}
        finally:
            subscribers[topic].discard(q)

    return EventSourceResponse(stream(), ping=15)


async def pub(request):
    body = (await request.body()).decode()
    for q in list(subscribers[request.query_params["topic"]]):
        q.put_nowait(body)
    return Response(status_code=204)


app = Starlette(routes=[Route("/sub", sub), Route("/pub", pub, methods=["POST"])])
