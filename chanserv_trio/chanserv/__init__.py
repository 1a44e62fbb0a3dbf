"""chanserv on top of the node: the request envelope, the Server and the Client."""
