"""The media types of manifests and of what they point at.

Manifest types are what a client sends as ``Content-Type`` on a manifest PUT and what the
registry answers a GET with; the others name the blobs a manifest references.
"""

from __future__ import annotations

from typing import Final

# --- manifests -------------------------------------------------------------------------

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
#: A schema1 manifest carrying its libtrust signatures; what a schema1 GET is served as.
SCHEMA1_SIGNED: Final = "application/vnd.docker.distribution.manifest.v1+prettyjws"
#: The unsigned schema1 type; Distribution records it for the stored (signature-less) blob.
SCHEMA1: Final = "application/vnd.docker.distribution.manifest.v1+json"

# --- configs ---------------------------------------------------------------------------

OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
#: The empty descriptor's type: content ``{}``, used as the config of OCI 1.1 artifacts.
OCI_EMPTY: Final = "application/vnd.oci.empty.v1+json"
DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
DOCKER_PLUGIN_CONFIG: Final = "application/vnd.docker.plugin.v1+json"

# --- layers ----------------------------------------------------------------------------

OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD: Final = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDISTRIBUTABLE: Final = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDISTRIBUTABLE_GZIP: Final = (
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
)
OCI_LAYER_NONDISTRIBUTABLE_ZSTD: Final = (
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
)
DOCKER_LAYER: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_UNCOMPRESSED: Final = "application/vnd.docker.image.rootfs.diff.tar"
#: A Docker layer the client fetches from the descriptor's ``urls``, not from the registry.
DOCKER_FOREIGN_LAYER: Final = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
#: What Distribution calls the ``fsLayers`` of a schema1 manifest.
SCHEMA1_LAYER: Final = "application/vnd.docker.container.image.rootfs.diff+x-gtar"

#: OCI layer types whose ``urls`` Distribution checks against ``validation.manifests.urls``.
OCI_LAYER_TYPES: Final = frozenset(
    {
        OCI_LAYER,
        OCI_LAYER_GZIP,
        OCI_LAYER_ZSTD,
        OCI_LAYER_NONDISTRIBUTABLE,
        OCI_LAYER_NONDISTRIBUTABLE_GZIP,
        OCI_LAYER_NONDISTRIBUTABLE_ZSTD,
    }
)
#: OCI layers that may live outside the registry: with ``urls``, their presence is not checked.
OCI_NONDISTRIBUTABLE_TYPES: Final = frozenset(
    {OCI_LAYER_NONDISTRIBUTABLE, OCI_LAYER_NONDISTRIBUTABLE_GZIP, OCI_LAYER_NONDISTRIBUTABLE_ZSTD}
)

#: Content types that say nothing about the manifest: the type is read from the body.
#: ``application/x-www-form-urlencoded`` is curl's default for ``-d``, never a real choice.
GENERIC_CONTENT_TYPES: Final = frozenset(
    {"", "application/json", "application/octet-stream", "application/x-www-form-urlencoded"}
)
