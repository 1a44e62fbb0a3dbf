"""chanserv_trio's benchmark suite: ours beside the raw trio ceiling, gRPC and pyzmq.

Run it with ``python -m benchmarks`` (or ``nox -s bench``); see ``benchmarks/README.md``.
"""
