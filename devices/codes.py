"""The one list of error codes (:class:`ErrorCode`): every code an error reply, a :class:`WireError`, a
:class:`RequestError`, an :class:`ArtifactError` or a :class:`RemoteDeviceError` carries is a member.

``ErrorCode`` is a :class:`enum.StrEnum`: a member *is* its wire string (``ErrorCode.BAD_REQUEST ==
"bad_request"``, msgpack sends it as that string, ``f"{code}"`` prints it), so the wire format is exactly what
it was with free strings. Each member documents itself (``ErrorCode.EXPIRED.__doc__``); docs/protocol.md and
docs/architecture.md point here instead of repeating the list.

It lives in the device core (the lowest layer) because :class:`~pat_runtime.devices.errors.RemoteDeviceError`
carries one; ``pat_runtime.wire`` and ``pat_runtime`` re-export it.
"""
from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """A short machine-readable reason, sent as ``{"error": {"code": ..., "message": ...}}`` in error replies.

    ``ErrorCode(s)`` raises ``ValueError`` for a string that is no member (so no free-string code can be
    made); :meth:`lookup` returns ``None`` instead (for codes received from a peer).
    """

    def __new__(cls, value: str, doc: str = ""):
        obj = str.__new__(cls, value)
        obj._value_ = value
        obj.__doc__ = doc
        return obj

    @classmethod
    def lookup(cls, value: object) -> "ErrorCode | None":
        """The member whose value is ``value``, or ``None`` (a code from a newer or a hostile peer)."""
        try:
            return cls(value)
        except (ValueError, TypeError):
            return None

    # ----- request handling at the node (NodeService and its plugins) ----------------------------------
    BAD_REQUEST = "bad_request", "The request's arrays or fields do not fit its type (count, dtype, options)."
    UNKNOWN_TYPE = "unknown_type", "The node has no handler for the request's message type."
    BAD_SHAPE = "bad_shape", ("Arrays whose shape does not fit the device or the model (ShapeError), or a "
                              "shape entry on the wire that is not a list of at most max_ndim non-negative ints.")
    OUT_OF_RANGE = "out_of_range", ("Inputs or parameters outside the device's declared safe range "
                                    "(OutOfRangeError); nothing reached the device. Also an artifact whose θ is "
                                    "outside the device's theta_range.")
    DEVICE_ERROR = "device_error", "The device raised an error (any other DeviceError) while serving the request."
    INTERNAL = "internal", ("A bug in a handler (an unexpected exception) or a reply that could not be "
                            "encoded; the node stays up and logs it.")
    EXPIRED = "expired", ("The request reached the node past its deadline and was not run; the coordinator "
                          "raises DeviceTimeoutError for it.")
    NO_MODEL = "no_model", "infer / rollback on a node with nothing deployed."
    NO_PREVIOUS = "no_previous", "rollback without a previous version in the node's history."
    UNKNOWN_VERSION = "unknown_version", "rollback to an artifact id that is not in the node's history."
    NOT_CALIBRATABLE = "not_calibratable", "calibrate_deploy of an artifact that carries no calibration plan."

    # ----- the wire: malformed or over-limit messages (WireError) --------------------------------------
    EMPTY = "empty", "A message with no frames (or no header frame)."
    BAD_HEADER = "bad_header", "The header is not a msgpack map with a string type / id and a valid 'arrays' list."
    BAD_VERSION = "bad_version", "The header's protocol version 'v' is not this one (wire.VERSION)."
    BAD_MAGIC = "bad_magic", "A single-payload message (MQTT) that does not start with the PAT1 magic."
    BAD_DTYPE = "bad_dtype", "An array dtype that may not cross the wire (wire.ALLOWED_DTYPES)."
    FRAME_COUNT = "frame_count", "The header declares a different number of arrays than frames follow."
    SIZE_MISMATCH = "size_mismatch", "An array frame whose byte size does not match its declared dtype and shape."
    TOO_LARGE = "too_large", ("A message, payload, reply or artifact (member) larger than its limit "
                              "(max_total_bytes, max_payload, the artifact limits).")
    HEADER_TOO_LARGE = "header_too_large", "A header larger than Limits.max_header_bytes."
    ARRAY_TOO_LARGE = "array_too_large", "One array larger than Limits.max_array_bytes."
    TOO_MANY_ARRAYS = "too_many_arrays", "More arrays than Limits.max_arrays."
    CORRUPT = "corrupt", ("Damaged data: a frame whose checksum does not match (in-process link), or an "
                          "artifact that is not a readable container or lacks members.")
    BAD_HELLO = "bad_hello", "A hello without a node id or a device spec."
    WRONG_KEY = "wrong_key", "A connection claimed a node id bound to another CURVE key (IdentityError)."
    ID_IN_USE = "id_in_use", "A second live connection claimed a node id that is in use (IdentityError)."

    # ----- the coordinator's view of a reply -----------------------------------------------------------
    REMOTE = "remote", ("An error reply without a code, or with a code this version does not know (the "
                        "received code is kept in the message).")
    BAD_REPLY = "bad_reply", "An ok reply whose arrays do not fit the request (e.g. apply without [y])."
    NON_FINITE = "non_finite", "A measurement (or artifact tensor) holding NaN or inf; it is refused."

    # ----- .pnn artifacts and signatures (ArtifactError; a refused deploy carries the same code) --------
    UNSIGNED = "unsigned", "An artifact without a signature where one is required."
    UNTRUSTED_KEY = "untrusted_key", ("Signed by a key not in the trusted keys, or the trusted keys / the "
                                      "node's own key are unusable.")
    BAD_SIGNATURE = "bad_signature", "The signature is malformed or does not match the artifact."
    BAD_MANIFEST = "bad_manifest", "manifest.json is malformed, too deep, or disagrees with the payload."
    BAD_MEMBER = "bad_member", "The container holds unknown, duplicated or compressed members."
    BAD_ARCHITECTURE = "bad_architecture", "The model builder config is unknown, out of range or too large."
    MALFORMED = "malformed", "The artifact could not be parsed."
    CHECKSUM_MISMATCH = "checksum_mismatch", ("A sha256 (manifest, payload, or the expected artifact id) does "
                                              "not match: altered or damaged in transit.")
    UNREADABLE = "unreadable", "The artifact file (or a stored one on the node) cannot be read."
    KIND_MISMATCH = "kind_mismatch", "The artifact was trained for another device kind."
    SPEC_MISMATCH = "spec_mismatch", "The artifact does not fit this device's spec (dimensions, ranges)."
    UNSUPPORTED_MODEL = "unsupported_model", "Only PNNs built by pat_runtime.pat.build_pnn can be exported."
    UNSUPPORTED_VERSION = "unsupported_version", "An artifact format_version this version cannot read."

    # ----- deployments (DeployError, on the deploying side) ---------------------------------------------
    NO_NODES = "no_nodes", "No node joined the fleet to deploy to within the wait."
    NO_STATUS = "no_status", "The node published no deployment status (MQTT retained deploy)."
    PENDING = "pending", ("The node did not answer a retained MQTT deployment in time; it stays retained and "
                          "applies when the node connects.")
    BROKER = "broker", "The MQTT broker failed or closed during a deployment."
    REFUSED = "refused", "The node refused a deployment without giving a code."


__all__ = ["ErrorCode"]
