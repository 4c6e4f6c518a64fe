"""Parity's key server error enum as classes: each variant registers itself by its Parity name, and
refinements (our subclasses) never replace a variant's entry."""

from __future__ import annotations

import pytest

from ocean_secret_store import exceptions as e
from ocean_secret_store.chain.acl import PermissionQueryFailed
from ocean_secret_store.node.acl import AccessCheckFailed
from ocean_secret_store.node.cluster import PeerTimeout, error_from_reply
from ocean_secret_store.protocol import messages as m

#: Parity's KeyServerError variants (secret-store/src/types/error.rs) with their HTTP status.
PARITY = {
    "AccessDenied": 403, "ConsensusUnreachable": 403, "ConsensusTemporaryUnreachable": 403,
    "ServerKeyIsNotFound": 404, "DocumentKeyIsNotFound": 404, "ServerKeyAlreadyGenerated": 400,
    "DocumentKeyAlreadyStored": 400, "InsufficientRequesterData": 400, "NodeDisconnected": 500,
    "NotEnoughNodesForThreshold": 500, "InvalidNodeId": 500, "DuplicateSessionId": 500,
    "NoActiveSessionWithId": 500, "TooEarlyForRequest": 500, "InvalidStateForRequest": 500,
    "InvalidNodeForRequest": 500, "InvalidMessage": 500, "InvalidMessageVersion": 500, "ReplayProtection": 500,
    "ExclusiveSessionActive": 500, "HasActiveSessions": 500, "Internal": 500, "Database": 500, "Serde": 400,
}


def test_every_variant_and_only_the_variants_are_registered() -> None:
    assert {name: cls.status for name, cls in e.KEY_SERVER_ERRORS.items()} == PARITY
    for name, cls in e.KEY_SERVER_ERRORS.items():
        assert cls.parity_name == name
        assert cls.__module__ == e.__name__
        assert getattr(e, cls.__name__) is cls


@pytest.mark.parametrize("refinement", [e.KeyVersionNotFound, PeerTimeout, AccessCheckFailed])
def test_refinements_answer_as_their_variant_and_do_not_replace_it(refinement: type[e.KeyServerError]) -> None:
    variant = e.KEY_SERVER_ERRORS[refinement.parity_name]
    assert variant is not refinement
    assert issubclass(refinement, variant)
    assert refinement.status == variant.status
    assert refinement.__name__ not in {cls.__name__ for cls in e.KEY_SERVER_ERRORS.values()}


def test_a_new_refinement_leaves_the_registry_alone_and_a_second_variant_is_refused() -> None:
    before = dict(e.KEY_SERVER_ERRORS)

    class Refined(e.NodeDisconnected):
        pass

    assert before == e.KEY_SERVER_ERRORS
    assert str(Refined()) == "node required for this operation is currently disconnected"
    with pytest.raises(TypeError, match="already the class NodeDisconnected"):

        class Impostor(e.KeyServerError):
            parity_name = "NodeDisconnected"

    assert before == e.KEY_SERVER_ERRORS


def test_display_texts() -> None:
    assert str(e.AccessDenied()) == "Access denied"
    assert str(e.InternalError("boom")) == "Internal error: boom"
    assert str(e.InternalError()) == "Internal error"
    assert str(e.SerializationError("bad")) == "Serialization error: bad"
    assert str(e.InsufficientRequesterData("x")) == "Insufficient requester data: x"


@pytest.mark.parametrize("name", sorted(PARITY))
def test_a_peers_error_reply_comes_back_as_its_variant(name: str) -> None:
    error = error_from_reply(m.ErrorReply(error=name, detail="why"))
    assert type(error) is e.KEY_SERVER_ERRORS[name]
    assert error.parity_name == name


def test_an_unknown_error_name_from_a_peer_is_internal() -> None:
    error = error_from_reply(m.ErrorReply(error="NoSuchVariant", detail=None))
    assert type(error) is e.InternalError


def test_the_chain_error_of_the_permission_query_is_no_key_server_error() -> None:
    assert issubclass(PermissionQueryFailed, e.ChainError)
    assert not issubclass(PermissionQueryFailed, e.KeyServerError)
