"""Wire formats shared by the key server node and its clients; pure code: bytes and strings in, typed values out."""
