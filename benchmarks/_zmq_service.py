"""What the pyzmq peer's server and client share: how a request and its answer are spelled in
zmq messages. Nothing here imports zmq, so the runner can read the skip reason without it.

One DEALER socket (the client) talks to one ROUTER socket (the server) over
``tcp://127.0.0.1``. The client posts a request as a two-part message
``[request id, body]`` (the ROUTER prepends the client's identity). The server answers with
messages whose first part is a 9-byte head ``request id u32 | source id u32 | kind u8``:

- ``[head(SOURCE), header]`` opens a source,
- ``[head(FRAME), payload]`` is one frame of it, one message per frame,
- ``[head(END_SOURCE)]`` ends it,
- ``[head(END_REQUEST)]`` (source id 0) ends the request, after every source has ended.

Sources are produced concurrently on the server, each in its own task, so their messages may
interleave; the client tells them apart by the source id.
"""

from __future__ import annotations

import struct

SOURCE = 1
FRAME = 2
END_SOURCE = 3
END_REQUEST = 4

HEAD = struct.Struct("!IIB")
REQUEST_ID = struct.Struct("!I")


#: Why the slow scenario is not run against zmq.
NO_SLOW = (
    "zmq has no per-source flow control: every source of a request comes through one "
    "socket's message queue, so a source read slowly either stalls the others or is "
    "buffered without bound by the application"
)
