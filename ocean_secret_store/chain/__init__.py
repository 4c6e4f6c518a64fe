"""The chain layer: keeper-contracts 0.13.2 artifacts, a local anvil, deployment, contract wrappers, the ACL check.

``keeper`` and ``deploy`` import web3 at the top (all they offer needs it); ``artifacts``, ``anvil``
and ``acl`` never import it, and this package imports no submodule, so the node's path to its
contract checker (``acl``) stays free of web3 (about 1 s at import).
"""
