"""The multiplexer node: listen, join, named services, routing, registries (memory and
etcd), backoff and node-wide budgets.
"""
