"""The wire protocol, sans-IO: frames, events, the state table, windows, settings,
the connection and compression. It imports no trio.
"""
