"""The chain layer: keeper-contracts 0.13.2 artifacts, a local anvil, deployment, typed contract wrappers and the node's contract ACL checker.

Submodules import web3 lazily (``artifacts``, ``anvil`` and ``acl`` not at all), so importing this
package keeps web3 out of the node's import path.
"""
