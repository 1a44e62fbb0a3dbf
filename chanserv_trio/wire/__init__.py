"""The wire protocol, sans-IO: frames, events, the state table, windows, settings,
the connection and compression. It imports no trio.

``COMPILED`` is true where the connection, the state table, the windows and the
resumption records run compiled by mypyc (the opt-in build, see ``setup.py``), false
where they run as the Python sources beside them.
"""

from . import _connection

#: The hot modules of this layer run compiled (mypyc), not interpreted.
COMPILED: bool = not _connection.__file__.endswith(".py")
