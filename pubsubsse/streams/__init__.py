"""A client's messages on their way to a connection: streams, their queues, and the SSE framing.

Private; :class:`~pubsubsse.Stream` is exported by the package.
"""
