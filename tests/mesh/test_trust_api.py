"""POST/GET /v1/revocations and /v1/operators against a real Agent: every refusal, then success."""

from __future__ import annotations

import base64

import nacl.signing
import pytest

from gossip.records import encode_record, key_id, sign_record
from mesh.trust.deploy import record_to_b64
from mesh.trust.records import sign_grant, sign_revocation
from tests.mesh.test_deploy_api import OPERATOR, STRANGER, Client, signed
from tests.mesh.test_deploy_api import api as api  # the fixture

ALICE = nacl.signing.SigningKey(b"\x0a" * 32)
NODE = "0123456789abcdef"


def alice_id() -> str:
    return key_id(bytes(ALICE.verify_key))


async def test_revocation_is_persisted_listed_and_refuses_the_node(api: tuple[object, Client]) -> None:
    agent, client = api
    status, body = await signed(
        client,
        "POST",
        "/v1/revocations",
        {"record": record_to_b64(sign_revocation(OPERATOR, NODE, 5, "lost"))},
    )
    assert status == 202, body
    resp = await client.get("/v1/revocations")
    assert await resp.json() == [
        {"node_id": NODE, "version": 5, "author": key_id(bytes(OPERATOR.verify_key)), "reason": "lost"}
    ]
    assert agent.node.state.is_revoked(NODE)  # type: ignore[attr-defined]
    assert any(r.kind == "revocation" for r in agent.store.load_records())  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("record", "status", "message"),
    [
        (sign_record(OPERATOR, "desired", NODE, 5, "fleet", b"x"), 400, "expected a revocation record"),
        (sign_revocation(OPERATOR, "not-a-node-id", 5), 400, "is not a node id"),
        (sign_revocation(STRANGER, NODE, 5), 400, "is not the request's signer"),
        (sign_record(OPERATOR, "revocation", NODE, 5, "region:north", b""), 400, "scope fleet"),
    ],
    ids=["wrong-kind", "bad-id", "other-author", "wrong-scope"],
)
async def test_bad_revocations_are_refused(
    api: tuple[object, Client], record: object, status: int, message: str
) -> None:
    _agent, client = api
    code, body = await signed(client, "POST", "/v1/revocations", {"record": record_to_b64(record)})  # type: ignore[arg-type]
    assert code == status and message in body["error"], body


async def test_unsigned_malformed_and_operator_targets_are_refused(api: tuple[object, Client]) -> None:
    _agent, client = api
    resp = await client.post("/v1/revocations", json={"record": "x"})
    assert resp.status == 401
    code, body = await signed(client, "POST", "/v1/revocations", {"record": "!!"})
    assert code == 400 and "not an encoded record" in body["error"]
    code, body = await signed(
        client, "POST", "/v1/revocations", {"record": base64.b64encode(b"\x01zz").decode()}
    )
    assert code == 400
    target = key_id(bytes(OPERATOR.verify_key))
    code, body = await signed(
        client, "POST", "/v1/revocations", {"record": record_to_b64(sign_revocation(OPERATOR, target, 9))}
    )
    assert code == 400 and "operator key, not a node" in body["error"]


async def test_grant_then_granted_key_may_deploy_but_not_revoke_then_removal(
    api: tuple[object, Client],
) -> None:
    agent, client = api
    grant = sign_grant(OPERATOR, bytes(ALICE.verify_key), 10, active=True)
    code, body = await signed(client, "POST", "/v1/operators", {"record": record_to_b64(grant)})
    assert code == 202, body
    rows = await (await client.get("/v1/operators")).json()
    assert [(r["role"], r["active"]) for r in rows] == [("root", True), ("granted", True)]
    # Alice may sign requests now, but revocations and grants need the root key.
    revocation = sign_revocation(ALICE, NODE, 11)
    code, body = await signed(
        client, "POST", "/v1/revocations", {"record": record_to_b64(revocation)}, key=ALICE
    )
    assert code == 403 and "root operator key" in body["error"]
    # A grant whose key is not the slot's is refused before the store sees it.
    bad = sign_record(OPERATOR, "trust", alice_id(), 12, "fleet", encode_record(revocation)[:10])
    code, body = await signed(client, "POST", "/v1/operators", {"record": record_to_b64(bad)})
    assert code == 400 and "not a grant" in body["error"]
    removal = sign_grant(OPERATOR, bytes(ALICE.verify_key), 13, active=False)
    code, body = await signed(client, "POST", "/v1/operators", {"record": record_to_b64(removal)})
    assert code == 202, body
    code, body = await signed(
        client, "POST", "/v1/revocations", {"record": record_to_b64(revocation)}, key=ALICE
    )
    assert code == 401, body  # a removed key's requests are refused
    assert not agent.node.state.is_active_operator(alice_id())  # type: ignore[attr-defined]
