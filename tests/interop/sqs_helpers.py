"""Start a real ``haremq serve`` with every listener on an ephemeral port; boto3 clients for it."""

from __future__ import annotations

import copy
import json
import os
from typing import Any

from brokerproc import BrokerProcess, start_broker, stop_broker

HttpBroker = BrokerProcess


def start_http_broker(*extra: str) -> BrokerProcess:
    return start_broker(*extra, prefix="haremq-http-")


def stop_http_broker(b: BrokerProcess) -> int:
    return stop_broker(b)


def sqs_client(b: HttpBroker, key: str = "guest", secret: str = "guest", **kw: Any) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("sqs", endpoint_url=b.sqs_url, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key=secret,
                        config=Config(retries={"max_attempts": 1}, read_timeout=30, **kw))


# member names of the SQS 2012-11-05 query model (dropped from the JSON model)
_LIST_MEMBERS = {
    "AttributeNameList": "AttributeName", "MessageAttributeNameList": "MessageAttributeName",
    "MessageSystemAttributeList": "MessageSystemAttributeName", "QueueUrlList": "QueueUrl", "MessageList": "Message",
    "TagKeyList": "TagKey", "StringList": "StringListValue", "BinaryList": "BinaryListValue",
    "SendMessageBatchRequestEntryList": "SendMessageBatchRequestEntry",
    "SendMessageBatchResultEntryList": "SendMessageBatchResultEntry",
    "DeleteMessageBatchRequestEntryList": "DeleteMessageBatchRequestEntry",
    "DeleteMessageBatchResultEntryList": "DeleteMessageBatchResultEntry",
    "ChangeMessageVisibilityBatchRequestEntryList": "ChangeMessageVisibilityBatchRequestEntry",
    "ChangeMessageVisibilityBatchResultEntryList": "ChangeMessageVisibilityBatchResultEntry",
    "BatchResultErrorEntryList": "BatchResultErrorEntry",
    "ListMessageMoveTasksResultEntryList": "ListMessageMoveTasksResultEntry",
    "AWSAccountIdList": "AWSAccountId", "ActionNameList": "ActionName",
}
_MAPS = {"QueueAttributeMap": ("Attribute", "Name", "Value"), "TagMap": ("Tag", "Key", "Value"),
         "MessageBodyAttributeMap": ("MessageAttribute", "Name", "Value"),
         "MessageBodySystemAttributeMap": ("MessageSystemAttribute", "Name", "Value"),
         "MessageSystemAttributeMap": ("Attribute", "Name", "Value")}

# error codes of the query model's exceptions (the JSON model names them by shape)
_ERROR_CODES = {
    "QueueDoesNotExist": "AWS.SimpleQueueService.NonExistentQueue", "QueueNameExists": "QueueAlreadyExists",
    "QueueDeletedRecently": "AWS.SimpleQueueService.QueueDeletedRecently",
    "PurgeQueueInProgress": "AWS.SimpleQueueService.PurgeQueueInProgress",
    "BatchEntryIdsNotDistinct": "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
    "EmptyBatchRequest": "AWS.SimpleQueueService.EmptyBatchRequest",
    "InvalidBatchEntryId": "AWS.SimpleQueueService.InvalidBatchEntryId",
    "TooManyEntriesInBatchRequest": "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
    "BatchRequestTooLong": "AWS.SimpleQueueService.BatchRequestTooLong",
    "MessageNotInflight": "AWS.SimpleQueueService.MessageNotInflight",
    "UnsupportedOperation": "AWS.SimpleQueueService.UnsupportedOperation",
}


def query_model() -> dict[str, Any]:
    import botocore.session

    loader = botocore.session.get_session().get_component("data_loader")
    model = copy.deepcopy(loader.load_service_model("sqs", "service-2"))
    md = model["metadata"]
    md["protocol"], md["protocols"] = "query", ["query"]
    md["xmlNamespace"] = "http://queue.amazonaws.com/doc/2012-11-05/"
    for key in ("jsonVersion", "targetPrefix", "awsQueryCompatible"):
        md.pop(key, None)
    for name, op in model["operations"].items():
        if "output" in op:
            op["output"]["resultWrapper"] = f"{name}Result"
    shapes = model["shapes"]
    for name, shape in shapes.items():
        if shape.get("exception"):
            shape["error"] = {"code": _ERROR_CODES.get(name, name), "httpStatusCode": 400, "senderFault": True}
    for name, member in _LIST_MEMBERS.items():
        shapes[name]["member"]["locationName"] = member
    for name, (_, key, value) in _MAPS.items():
        shapes[name]["key"]["locationName"] = key
        shapes[name]["value"]["locationName"] = value
    for shape in shapes.values():
        for ref in shape.get("members", {}).values():
            if ref["shape"] in _MAPS:
                ref["locationName"] = _MAPS[ref["shape"]][0]
    return model


def query_client(b: HttpBroker, data_dir: str, key: str = "guest", secret: str = "guest") -> Any:
    """A botocore SQS client speaking the Query protocol (form in, XML out); ``data_dir`` holds its model."""
    import botocore.session
    from botocore.config import Config

    d = os.path.join(data_dir, "sqs", "2012-11-05")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "service-2.json"), "w") as f:
        json.dump(query_model(), f)
    session = botocore.session.get_session()
    session.get_component("data_loader").search_paths.insert(0, data_dir)
    return session.create_client("sqs", endpoint_url=b.sqs_url, region_name="us-east-1", aws_access_key_id=key,
                                 aws_secret_access_key=secret,
                                 config=Config(retries={"max_attempts": 1}, read_timeout=30))
