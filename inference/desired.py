"""A deployment as its `desired` record: kind `desired`, key `deployment/<name>`, scope
`fleet`, payload the manifest's canonical bytes (inference/manifest.py), signed by an
operator. A deletion is a signed tombstone of the same slot.

Pure, so the CLI (mesh/cli/deploy.py), the API's check of what it is sent (mesh/trust/deploy.py)
and the simulator build the same record from the same manifest.
"""

from __future__ import annotations

import nacl.signing

from gossip.kinds import DESIRED_KIND, FLEET_SCOPE
from gossip.records import Record, sign_record
from inference.manifest import Deployment, canonical_bytes, desired_key


def sign_deployment(key: nacl.signing.SigningKey, deployment: Deployment, version: int) -> Record:
    """The operator-signed `desired` record of `deployment`."""
    return sign_record(
        key, DESIRED_KIND, deployment.record_key, version, FLEET_SCOPE, canonical_bytes(deployment)
    )


def sign_deletion(key: nacl.signing.SigningKey, name: str, version: int) -> Record:
    """The operator-signed tombstone of the deployment `name`."""
    return sign_record(key, DESIRED_KIND, desired_key(name), version, FLEET_SCOPE, b"", deleted=True)
