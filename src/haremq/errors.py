"""One error root and one registry of codes for every protocol.

Each error knows the AMQP reply code it maps to and whether that code closes the channel
or the whole connection (AMQP 0-9-1 spec section 1.2 + RabbitMQ's usage), the text STOMP puts in
an ERROR frame's ``message`` header, and the SQS error code + HTTP status. Protocols translate
an error by reading these attributes; nobody keeps a second table.

``PeerError`` subclasses blame the client; ``InternalError`` blames us.
"""

from __future__ import annotations

from typing import ClassVar


class HareError(Exception):
    """Root of every haremq error."""

    reply_code: ClassVar[int] = 541
    reply_name: ClassVar[str] = "INTERNAL_ERROR"
    closes_connection: ClassVar[bool] = True
    stomp_message: ClassVar[str] = "internal error"
    sqs_code: ClassVar[str] = "InternalFailure"
    http_status: ClassVar[int] = 500

    def __init__(self, text: str = "", *, class_id: int = 0, method_id: int = 0) -> None:
        super().__init__(text)
        self.text = text
        self.class_id = class_id
        self.method_id = method_id

    @property
    def reply_text(self) -> str:
        """The reply text as RabbitMQ formats it: ``NAME - details``."""
        return f"{self.reply_name} - {self.text}" if self.text else self.reply_name


class PeerError(HareError):
    """The peer did something wrong; the broker is fine."""

    closes_connection = False
    sqs_code = "InvalidParameterValue"
    http_status = 400


class InternalError(HareError):
    """A bug or resource failure on our side."""


# ---- channel-level (soft) errors -------------------------------------------------------------
class ContentTooLarge(PeerError):
    reply_code, reply_name, stomp_message = 311, "CONTENT_TOO_LARGE", "content too large"
    sqs_code = "MessageTooLong"


class NoRoute(PeerError):
    reply_code, reply_name = 312, "NO_ROUTE"


class NoConsumers(PeerError):
    reply_code, reply_name = 313, "NO_CONSUMERS"


class AccessRefused(PeerError):
    reply_code, reply_name, stomp_message = 403, "ACCESS_REFUSED", "access refused"
    sqs_code, http_status = "AccessDenied", 403


class NotFound(PeerError):
    reply_code, reply_name, stomp_message = 404, "NOT_FOUND", "not found"
    sqs_code = "AWS.SimpleQueueService.NonExistentQueue"


class ResourceLocked(PeerError):
    reply_code, reply_name, stomp_message = 405, "RESOURCE_LOCKED", "resource locked"


class PreconditionFailed(PeerError):
    reply_code, reply_name, stomp_message = 406, "PRECONDITION_FAILED", "precondition failed"


# ---- connection-level (hard) errors ----------------------------------------------------------
class ConnectionForced(HareError):
    reply_code, reply_name, stomp_message = 320, "CONNECTION_FORCED", "connection forced"
    http_status = 503
    sqs_code = "ServiceUnavailable"


class InvalidPath(PeerError):
    reply_code, reply_name, closes_connection = 402, "INVALID_PATH", True


class FrameError(PeerError):
    reply_code, reply_name, closes_connection = 501, "FRAME_ERROR", True
    stomp_message = "malformed frame"


class SyntaxError_(PeerError):
    reply_code, reply_name, closes_connection = 502, "SYNTAX_ERROR", True
    stomp_message = "syntax error"


class CommandInvalid(PeerError):
    reply_code, reply_name, closes_connection = 503, "COMMAND_INVALID", True
    stomp_message = "command invalid"


class ChannelError(PeerError):
    reply_code, reply_name, closes_connection = 504, "CHANNEL_ERROR", True


class UnexpectedFrame(PeerError):
    reply_code, reply_name, closes_connection = 505, "UNEXPECTED_FRAME", True


class ResourceError(HareError):
    reply_code, reply_name, closes_connection = 506, "RESOURCE_ERROR", True
    stomp_message = "resource error"
    http_status, sqs_code = 503, "ServiceUnavailable"


class NotAllowed(PeerError):
    reply_code, reply_name, closes_connection = 530, "NOT_ALLOWED", True
    stomp_message = "not allowed"


class NotImplementedByBroker(PeerError):
    reply_code, reply_name, closes_connection = 540, "NOT_IMPLEMENTED", True
    stomp_message = "not implemented"


class AuthenticationFailed(AccessRefused):
    """Bad credentials: RabbitMQ closes the connection with 403 ACCESS_REFUSED."""

    closes_connection = True
    sqs_code = "InvalidClientTokenId"


class ConfigError(HareError):
    """An invalid setting; the CLI prints it as one line and exits with status 2."""


class StartupError(HareError):
    """The node cannot start (a port in use, a data dir locked or not writable); one line, status 2."""


# ---- SQS API errors --------------------------------------------------------------------------
# ``sqs_code`` is the query-protocol code (sent in ``x-amzn-query-error``, what boto3 shows as
# ``Error.Code``); ``sqs_shape`` is the JSON ``__type`` shape name, which boto3 maps to its modeled
# exception classes (``client.exceptions.QueueDoesNotExist``). Both with the AWS HTTP status.
class SqsError(PeerError):
    """A client error that only the SQS API raises."""

    sqs_shape: ClassVar[str] = "InvalidParameterValue"


def _sqs(name: str, code: str, status: int = 400, base: type[HareError] = SqsError) -> type[SqsError]:
    cls = type(name, (base,), {"sqs_code": code, "sqs_shape": name, "http_status": status,
                               "__doc__": f"SQS ``{code}``."})
    return cls


InvalidParameterValue = _sqs("InvalidParameterValue", "InvalidParameterValue")
MissingParameter = _sqs("MissingParameter", "MissingParameter")
InvalidAction = _sqs("InvalidAction", "InvalidAction")
MalformedRequest = _sqs("SerializationException", "SerializationException")
# SQS answers an oversize message with InvalidParameterValue ("Message must be shorter than ..."), so do we
MessageTooLong = _sqs("MessageTooLong", "InvalidParameterValue")
MessageTooLong.sqs_shape = "InvalidParameterValue"
InvalidMessageContents = _sqs("InvalidMessageContents", "InvalidMessageContents")
InvalidAttributeName = _sqs("InvalidAttributeName", "InvalidAttributeName")
InvalidAttributeValue = _sqs("InvalidAttributeValue", "InvalidAttributeValue")
QueueDoesNotExist = _sqs("QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue")
QueueNameExists = _sqs("QueueNameExists", "QueueAlreadyExists")
QueueDeletedRecently = _sqs("QueueDeletedRecently", "AWS.SimpleQueueService.QueueDeletedRecently")
PurgeQueueInProgress = _sqs("PurgeQueueInProgress", "AWS.SimpleQueueService.PurgeQueueInProgress")
ReceiptHandleIsInvalid = _sqs("ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid")
MessageNotInflight = _sqs("MessageNotInflight", "AWS.SimpleQueueService.MessageNotInflight")
TooManyEntriesInBatchRequest = _sqs("TooManyEntriesInBatchRequest",
                                    "AWS.SimpleQueueService.TooManyEntriesInBatchRequest")
EmptyBatchRequest = _sqs("EmptyBatchRequest", "AWS.SimpleQueueService.EmptyBatchRequest")
BatchEntryIdsNotDistinct = _sqs("BatchEntryIdsNotDistinct", "AWS.SimpleQueueService.BatchEntryIdsNotDistinct")
InvalidBatchEntryId = _sqs("InvalidBatchEntryId", "AWS.SimpleQueueService.InvalidBatchEntryId")
BatchRequestTooLong = _sqs("BatchRequestTooLong", "AWS.SimpleQueueService.BatchRequestTooLong")
UnsupportedOperation = _sqs("UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation")
ResourceNotFound = _sqs("ResourceNotFoundException", "ResourceNotFoundException", 404)
OverLimit = _sqs("OverLimit", "OverLimit", 403)
# authentication (SigV4): the peer is refused, the connection stays usable
InvalidClientTokenId = _sqs("InvalidClientTokenId", "InvalidClientTokenId", 403, AccessRefused)
SignatureDoesNotMatch = _sqs("SignatureDoesNotMatch", "SignatureDoesNotMatch", 403, AccessRefused)
IncompleteSignature = _sqs("IncompleteSignature", "IncompleteSignature", 400, AccessRefused)
MissingAuthenticationToken = _sqs("MissingAuthenticationToken", "MissingAuthenticationToken", 403, AccessRefused)
RequestExpired = _sqs("RequestExpired", "RequestExpired", 400, AccessRefused)
AccessDenied = _sqs("AccessDenied", "AccessDenied", 403, AccessRefused)
