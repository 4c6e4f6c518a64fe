"""The one exception tree of ocean_secret_store; every error the package raises is in it.

::

    * SecretStoreError
      x CryptoError                       (also a ValueError: bad input to the maths)
        + InvalidScalar                   wrong length, zero, or >= n
        + InvalidPoint                    wrong length, not on secp256k1, or the point at infinity
        + InvalidSignature                unparseable, unrecoverable (v = 27/28) or not verifying
        + DecryptionFailed                ECIES blob too short, bad prefix or authentication tag
        + InvalidShare                    a VSS share that does not match its commitments
        + InvalidThreshold                t outside 0 <= t < n, or too few shares for t

Messages say what is wrong with the input; they never contain secret material (shares,
document keys, private keys), only lengths, public values and positions.
"""

from __future__ import annotations


class SecretStoreError(Exception):
    """Root of every error raised by ocean_secret_store."""


class CryptoError(SecretStoreError, ValueError):
    """A cryptographic input or result is invalid."""


class InvalidScalar(CryptoError):
    """A 32-byte scalar is malformed, zero, or not below the curve order."""


class InvalidPoint(CryptoError):
    """A 64-byte point is malformed, not on secp256k1, or the point at infinity."""


class InvalidSignature(CryptoError):
    """A signature cannot be parsed, cannot be recovered, or does not verify."""


class DecryptionFailed(CryptoError):
    """An ECIES ciphertext is malformed or fails authentication."""


class InvalidShare(CryptoError):
    """A secret share does not match the commitments its dealer published."""


class InvalidThreshold(CryptoError):
    """A threshold is out of range for the number of participants or shares."""
