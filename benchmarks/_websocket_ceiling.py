"""What the WebSocket ceiling's server and client share: trio-websocket, one binary message per
frame, no multiplexing.

A client sends a request as one binary message. The server answers, per source, a text message
``S<index>`` (the header), the frames as binary messages, and a text message ``E``; after the
last source a text message ``D``. Text and binary messages tell control from data, so payloads
are sent and received as they are, without a prefix to add or strip.
"""

from __future__ import annotations

PATH = "/"
#: Room for the heavy scenario's 1 MiB frames (trio-websocket's default limit is 1 MiB).
MAX_MESSAGE = 16 * 1024 * 1024
#: Bytes trio-websocket asks the socket for at a time (its default of 4 KiB reads a large
#: message in hundreds of pieces).
RECEIVE_BUFFER = 256 * 1024
#: Complete messages trio-websocket queues for the reader.
MESSAGE_QUEUE = 16
SOURCE = "S"
END_SOURCE = "E"
DONE = "D"
