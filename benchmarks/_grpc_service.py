"""How the gRPC peer is addressed: one unary-stream method carrying raw bytes.

No protobuf: handlers and stubs are generic with identity (absent) serializers, so requests
and responses are the bytes the application gives. The first message of a response is the
source's header, the rest are its frames.
"""

from __future__ import annotations

SERVICE = "chanserv.bench.Bench"
METHOD = "Post"
PATH = f"/{SERVICE}/{METHOD}"
#: Room for the heavy scenario's 1 MiB frames with any header a peer adds.
MAX_MESSAGE = 16 * 1024 * 1024
OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
]
#: The most calls the client keeps open at once on its channel: 10,000 at once get cancelled.
MAX_CONCURRENT_CALLS = 1_000
