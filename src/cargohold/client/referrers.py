"""Referrers: the referrers API, and the OCI 1.1 tag schema for registries without it.

``GET /v2/<name>/referrers/<digest>`` lists the manifests whose ``subject`` is
``digest``. A registry without that API (Distribution 2.8 answers it with a
plain ``404 page not found``) gets the specification's fallback: the client
that pushes a manifest with a ``subject`` and sees no ``OCI-Subject`` header in
the reply keeps an image index of the subject's referrers under the tag
``<alg>-<hex>``, and readers fetch that tag. Deleting a referrer does not
update the fallback index (nor does oras); a listing skips nothing, so a
deleted referrer stays listed there until the tag is rewritten.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from cargohold.client.transport import Transport
from cargohold.descriptor import Descriptor
from cargohold.digest import Digest
from cargohold.errors import ManifestInvalid, ManifestUnknown, NameUnknown, RegistryError
from cargohold.manifest import OCI_INDEX, parse_manifest

if TYPE_CHECKING:
    from cargohold.client.manifests import RemoteManifestService


class _NoReferrersApi(RegistryError):
    """A 404 without an error code: the registry does not know the endpoint."""


def referrers_tag(subject: Digest) -> str:
    """The fallback tag of ``subject``: ``<alg>-<hex>``, cut to the lengths the spec sets."""
    return f"{subject.algorithm[:32]}-{subject.encoded[:64]}"


async def list_referrers(
    transport: Transport,
    manifests: RemoteManifestService,
    subject: Digest,
    artifact_type: str | None,
) -> list[Descriptor]:
    name = manifests.name
    path = f"/v2/{name}/referrers/{subject}"
    if artifact_type:
        path += f"?artifactType={quote(artifact_type, safe='')}"
    try:
        response = await transport.send(
            "GET",
            path,
            scopes=(f"repository:{name}:pull",),
            headers={"Accept": OCI_INDEX},
            missing=lambda: _NoReferrersApi(),
        )
    except _NoReferrersApi:
        found = await _from_tag(manifests, subject)
        filtered = False
    else:
        async with response:
            found = _descriptors(await response.read())
            filtered = "OCI-Filters-Applied" in response.headers
    if artifact_type and not filtered:
        found = [d for d in found if d.artifact_type == artifact_type]
    return found


async def _from_tag(manifests: RemoteManifestService, subject: Digest) -> list[Descriptor]:
    try:
        index = await manifests.fetch(referrers_tag(subject))
    except (ManifestUnknown, NameUnknown):
        return []
    return _descriptors(index.payload)


def _descriptors(payload: bytes) -> list[Descriptor]:
    try:
        document = json.loads(payload)
    except ValueError as exc:
        raise RegistryError(f"the registry sent a referrers list that is not JSON: {exc}") from None
    entries = document.get("manifests") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise RegistryError("the registry sent a referrers list without manifests")
    try:
        return [Descriptor.from_json(entry, "referrer") for entry in entries]
    except ManifestInvalid as exc:
        raise RegistryError(f"the registry sent a malformed referrer: {exc}") from None


async def add_to_referrers_tag(
    manifests: RemoteManifestService,
    subject: Digest,
    payload: bytes,
    media_type: str,
    digest: Digest,
) -> None:
    """Add the manifest ``payload`` to the fallback index of ``subject``."""
    try:
        descriptor = parse_manifest(payload, media_type).descriptor(digest.algorithm)
    except ManifestInvalid:
        return  # the registry accepted what we cannot parse: nothing sensible to index
    descriptor = Descriptor(
        descriptor.media_type,
        digest,
        descriptor.size,
        annotations=descriptor.annotations,
        artifact_type=descriptor.artifact_type,
    )
    tag = referrers_tag(subject)
    entries: list[Any] = []
    try:
        current = await manifests.fetch(tag)
    except (ManifestUnknown, NameUnknown):
        pass
    else:
        document = json.loads(current.payload)
        if isinstance(document, dict) and isinstance(document.get("manifests"), list):
            entries = document["manifests"]
    if any(isinstance(e, dict) and e.get("digest") == str(digest) for e in entries):
        return
    entries.append(descriptor.to_json())
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    await manifests.put(json.dumps(index).encode(), OCI_INDEX, [tag])
