"""The key server node: configuration, cluster core, sessions, transport, storage, ACL and HTTP API."""
