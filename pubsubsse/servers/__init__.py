"""What depends on the server a stream runs under, fenced off from the protocol.

* ``pubsubsse.servers._body``: a stream as a WSGI response body, closed when
  the response ends or the peer goes away;
* ``pubsubsse.servers._gunicorn_gevent``: the one server-specific transport,
  publishers writing events straight to idle streams' sockets under
  ``gunicorn -k gevent``;
* ``pubsubsse.servers._disconnect``: noticing a closed connection while a
  stream is idle;
* ``pubsubsse.servers._shutdown``: ending streams when the server stops the
  process (SIGTERM).
* ``pubsubsse.servers._workers``: how many worker processes gunicorn runs, and
  the warning at boot when they cannot share an in-process service.

Whether the process runs under gevent is answered once, by
``pubsubsse.servers._runtime``.
"""
