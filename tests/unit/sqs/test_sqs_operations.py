"""SQS requests parsed into typed operations without a broker (protocol/sqs is sans-IO)."""

from __future__ import annotations

import pytest

from haremq.errors import BatchRequestTooLong, InvalidParameterValue, MessageTooLong, MissingParameter
from haremq.protocol.sqs import api as P
from haremq.protocol.sqs.attributes import DEDUP_HEADER, GROUP_HEADER


def test_move_task_arns_become_queue_names() -> None:
    op = P.parse_start_move(P.Params({"SourceArn": "arn:aws:sqs:eu-west-1:000000000000:dlq",
                                      "DestinationArn": "arn:aws:sqs:eu-west-1:000000000000:src",
                                      "MaxNumberOfMessagesPerSecond": 5}))
    assert op == P.StartMove("dlq", "src", 5)
    with pytest.raises(InvalidParameterValue):
        P.parse_start_move(P.Params({"SourceArn": "dlq"}))
    assert P.parse_list_moves(P.Params({"SourceArn": "arn:aws:sqs:us-east-1:000000000000:dlq"})) == ("dlq", 1)


def test_change_visibility_needs_a_timeout_in_range() -> None:
    assert P.parse_change_visibility(P.Params({"ReceiptHandle": "h", "VisibilityTimeout": 0})) == \
        P.ChangeVisibility("h", 0)
    with pytest.raises(MissingParameter):
        P.parse_change_visibility(P.Params({"ReceiptHandle": "h"}))
    with pytest.raises(InvalidParameterValue):
        P.parse_change_visibility(P.Params({"ReceiptHandle": "h", "VisibilityTimeout": 43201}))


def test_send_headers_carry_group_and_dedup_and_respect_queue_limits() -> None:
    op = P.parse_send(P.Params({"MessageBody": "hi", "MessageGroupId": "g", "MessageDeduplicationId": "d"}))
    body, headers = P.send_headers(op, fifo=True, max_size=1024)
    assert body == b"hi" and headers == {GROUP_HEADER: "g", DEDUP_HEADER: "d"}
    with pytest.raises(InvalidParameterValue):  # a deduplication id on a standard queue
        P.send_headers(op, fifo=False, max_size=1024)
    with pytest.raises(MessageTooLong):
        P.send_headers(op, fifo=True, max_size=1)
    assert P.send_result(op, body, "m", 7)["SequenceNumber"] == f"{7:020d}"


def test_send_batch_checks_the_whole_request_first() -> None:
    big = {"Entries": [{"Id": str(i), "MessageBody": "x" * 300_000} for i in range(4)]}
    with pytest.raises(BatchRequestTooLong):
        P.parse_send_batch(P.Params(big), fifo=False, content_dedup=False)
    one = {"Entries": [{"Id": "a", "MessageBody": "x"}]}
    with pytest.raises(MissingParameter):  # FIFO: every entry needs its group
        P.parse_send_batch(P.Params(one), fifo=True, content_dedup=True)
    assert [eid for eid, _ in P.parse_send_batch(P.Params(one), fifo=False, content_dedup=False)] == ["a"]
