"""Parity-compatible threshold cryptography on secp256k1: pure functions, no I/O, injected randomness.

Submodules: ``curve`` (value types), ``hashes``, ``signatures`` (raw-hash ECDSA), ``ecies``,
``document`` (document keys and document encryption), ``sharing`` (polynomials, Lagrange,
VSS), ``dkg``, ``shadows`` (threshold decryption), ``schnorr`` and ``resharing``
(verifiable redistribution, proactive refresh, key-version epochs). This package imports
nothing from ocean_secret_store except ``exceptions``.
"""
