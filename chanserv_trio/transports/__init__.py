"""Transports behind one interface: the scheme registry, the TCP, TLS, Unix and
WebSocket implementations, URL parsing and error mapping.
"""
