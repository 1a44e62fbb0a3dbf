"""The trio driver: runs one wire connection over a byte stream or a message transport
(options, per-stream state, ``LinkStream``, keepalive, refusals).
"""
