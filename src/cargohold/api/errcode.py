"""The specification's error codes: the only place that knows them.

Each domain error maps to one code and one HTTP status, as Distribution
answers them (where the OCI specification differs, it wins; see the README's
compatibility section). The body is always
``{"errors": [{"code": …, "message": …, "detail": …}]}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from cargohold import errors


@dataclass(frozen=True, slots=True)
class ErrorCode:
    code: str
    status: int


BLOB_UNKNOWN = ErrorCode("BLOB_UNKNOWN", 404)
BLOB_UPLOAD_INVALID = ErrorCode("BLOB_UPLOAD_INVALID", 400)
BLOB_UPLOAD_UNKNOWN = ErrorCode("BLOB_UPLOAD_UNKNOWN", 404)
DIGEST_INVALID = ErrorCode("DIGEST_INVALID", 400)
MANIFEST_BLOB_UNKNOWN = ErrorCode("MANIFEST_BLOB_UNKNOWN", 400)
MANIFEST_INVALID = ErrorCode("MANIFEST_INVALID", 400)
MANIFEST_UNKNOWN = ErrorCode("MANIFEST_UNKNOWN", 404)
MANIFEST_UNVERIFIED = ErrorCode("MANIFEST_UNVERIFIED", 400)
NAME_INVALID = ErrorCode("NAME_INVALID", 400)
NAME_UNKNOWN = ErrorCode("NAME_UNKNOWN", 404)
SIZE_INVALID = ErrorCode("SIZE_INVALID", 400)
TAG_INVALID = ErrorCode("TAG_INVALID", 400)
UNAUTHORIZED = ErrorCode("UNAUTHORIZED", 401)
DENIED = ErrorCode("DENIED", 403)
UNSUPPORTED = ErrorCode("UNSUPPORTED", 405)
RANGE_INVALID = ErrorCode("RANGE_INVALID", 416)
TOOMANYREQUESTS = ErrorCode("TOOMANYREQUESTS", 429)
PAGINATION_NUMBER_INVALID = ErrorCode("PAGINATION_NUMBER_INVALID", 400)
UNAVAILABLE = ErrorCode("UNAVAILABLE", 503)
UNKNOWN = ErrorCode("UNKNOWN", 500)
#: A mirror's upstream failed it: the specification names no code, so UNKNOWN with 502.
UPSTREAM_INVALID = ErrorCode("UNKNOWN", 502)
#: The specification asks for 413 above the manifest size limit but names no code for it.
MANIFEST_TOO_LARGE = ErrorCode("MANIFEST_INVALID", 413)

_BY_ERROR: dict[type[errors.RegistryError], ErrorCode] = {
    errors.BlobUnknown: BLOB_UNKNOWN,
    errors.BlobUploadInvalid: BLOB_UPLOAD_INVALID,
    errors.BlobUploadUnknown: BLOB_UPLOAD_UNKNOWN,
    errors.DigestInvalid: DIGEST_INVALID,
    errors.ManifestBlobUnknown: MANIFEST_BLOB_UNKNOWN,
    errors.ManifestInvalid: MANIFEST_INVALID,
    errors.ManifestUnknown: MANIFEST_UNKNOWN,
    errors.ManifestUnverified: MANIFEST_UNVERIFIED,
    errors.ManifestTooLarge: MANIFEST_TOO_LARGE,
    errors.NameInvalid: NAME_INVALID,
    errors.ReferenceInvalid: NAME_INVALID,
    errors.NameUnknown: NAME_UNKNOWN,
    errors.SizeInvalid: SIZE_INVALID,
    errors.TagInvalid: TAG_INVALID,
    errors.Unauthorized: UNAUTHORIZED,
    errors.Denied: DENIED,
    errors.OperationUnsupported: UNSUPPORTED,
    errors.RangeInvalid: RANGE_INVALID,
    errors.TooManyRequests: TOOMANYREQUESTS,
    errors.PaginationNumberInvalid: PAGINATION_NUMBER_INVALID,
    errors.Unavailable: UNAVAILABLE,
    errors.UpstreamInvalid: UPSTREAM_INVALID,
}


def code_for(error: errors.RegistryError) -> ErrorCode:
    for cls in type(error).__mro__:
        code = _BY_ERROR.get(cls)
        if code is not None:
            return code
    return UNKNOWN


def error_body(code: ErrorCode, message: str, detail: object = None) -> bytes:
    entry: dict[str, object] = {"code": code.code, "message": message}
    if detail is not None:
        entry["detail"] = detail
    return json.dumps({"errors": [entry]}).encode()


def _reverse() -> tuple[
    dict[tuple[str, int], type[errors.RegistryError]], dict[str, type[errors.RegistryError]]
]:
    # The first error class listed for a code wins: NameInvalid over ReferenceInvalid.
    by_pair: dict[tuple[str, int], type[errors.RegistryError]] = {}
    by_code: dict[str, type[errors.RegistryError]] = {}
    for cls, code in _BY_ERROR.items():
        by_pair.setdefault((code.code, code.status), cls)
        if code.code != UNKNOWN.code:  # UNKNOWN alone says nothing: the base error
            by_code.setdefault(code.code, cls)
    return by_pair, by_code


_BY_PAIR, _BY_CODE = _reverse()


def error_for(code: str, status: int | None = None) -> type[errors.RegistryError]:
    """The domain error for an error ``code`` a registry answered: the table above, reversed.

    The status tells apart errors that share a code (``MANIFEST_INVALID`` with 413 is
    ``ManifestTooLarge``). ``UNKNOWN`` and codes outside the specification give the
    base ``RegistryError``. The HTTP client uses this, so both directions are one table.
    """
    if status is not None:
        found = _BY_PAIR.get((code, status))
        if found is not None:
            return found
    return _BY_CODE.get(code, errors.RegistryError)
