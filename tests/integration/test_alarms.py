"""Resource alarms, as RabbitMQ's: above the memory high watermark or below ``disk_free_limit``,
publishers are held back on every protocol (AMQP: connection.blocked and not read; STOMP: not read
after a SEND, so no RECEIPT; SQS: sends answered 503 ServiceUnavailable) while consumers keep
working; when the alarm clears, publishing resumes."""

from __future__ import annotations

import os
import queue
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator

import pika
import pytest

from brokerproc import BrokerProcess, start_broker, stop_broker
from interop.stomp_helpers import connect as stomp_connect


def wait_for(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def message_count(port: int, name: str) -> int:
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    try:
        return int(conn.channel().queue_declare(name, passive=True).method.message_count)
    finally:
        conn.close()


def test_memory_alarm_clears_once_the_backlog_drains() -> None:
    # small bodies: the allocator keeps their pages after they are freed, so the process RSS stays
    # high after the drain; the alarm must follow what the broker holds, not the RSS
    b = start_broker(env={"HAREMQ_MEMORY_HIGH_WATERMARK": str(16 * 1024 * 1024)})
    try:
        # a connection that only consumes is told connection.blocked too, but is still read
        other = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        seen: list[str] = []
        other.add_on_connection_blocked_callback(lambda _c, _m: seen.append("blocked"))
        other.add_on_connection_unblocked_callback(lambda _c, _m: seen.append("unblocked"))
        och = other.channel()
        och.queue_declare("big")
        pub = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        events: list[str] = []
        pub.add_on_connection_blocked_callback(lambda _c, _m: events.append("blocked"))
        pub.add_on_connection_unblocked_callback(lambda _c, _m: events.append("unblocked"))
        ch = pub.channel()
        body = b"x" * 2048

        def flood() -> None:  # ~29 MiB held in RAM; pika waits in its flush while we are not read
            for _ in range(12_000):
                ch.basic_publish("", "big", body)

        t = threading.Thread(target=flood, daemon=True)
        t.start()
        deadline = time.monotonic() + 20
        while "blocked" not in seen and time.monotonic() < deadline:
            other.process_data_events(time_limit=0.2)
        assert seen == ["blocked"]
        drained = 0
        deadline = time.monotonic() + 30
        while t.is_alive() or seen[-1] != "unblocked":
            assert time.monotonic() < deadline, f"the alarm did not clear after the drain: {seen}"
            drained += och.queue_purge("big").method.message_count
            other.process_data_events(time_limit=0.2)
        t.join()
        assert drained > 0
        deadline = time.monotonic() + 5
        while events[-1:] != ["unblocked"] and time.monotonic() < deadline:
            pub.process_data_events(time_limit=0.2)  # pika dispatches the publisher's callbacks here
        assert events[0] == "blocked" and events[-1] == "unblocked", events
        och.queue_purge("big")
        ch.basic_publish("", "big", b"after")  # reading resumed: this one is routed
        pub.process_data_events(time_limit=0.2)
        deadline = time.monotonic() + 5
        while och.queue_declare("big", passive=True).method.message_count < 1:
            assert time.monotonic() < deadline, "publishing did not resume"
            time.sleep(0.05)
        other.close()
        pub.close()
    finally:
        stop_broker(b)


# ---- disk alarm --------------------------------------------------------------------------------------------
FS_SIZE = 64 * 1024 * 1024
LIMIT = 32 * 1000 * 1000


class SmallDisk:
    """A 64 MiB tmpfs holding the broker's data dir; ``fill`` takes it below ``disk_free_limit``
    with a file of our own, ``free`` gives the space back."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.filler = os.path.join(path, "filler")

    def fill(self) -> None:
        with open(self.filler, "wb") as f:
            f.write(b"\0" * (40 * 1024 * 1024))

    def free(self) -> None:
        os.unlink(self.filler)


@pytest.fixture
def small_disk() -> Iterator[SmallDisk]:
    path = tempfile.mkdtemp(prefix="haremq-alarm-")
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE}", "tmpfs", path],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        yield SmallDisk(path)
    finally:
        subprocess.run(["umount", "-l", path], check=False)


def disk_broker(disk: SmallDisk, *extra: str) -> BrokerProcess:
    return start_broker(*extra, data_dir=os.path.join(disk.path, "data"),
                        env={"HAREMQ_DISK_FREE_LIMIT": str(LIMIT)})


def test_disk_alarm_blocks_amqp_publishers_and_confirms_nothing_until_space_returns(small_disk: SmallDisk) -> None:
    b = disk_broker(small_disk)
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        events: list[str] = []
        conn.add_on_connection_blocked_callback(lambda _c, _m: events.append("blocked"))
        conn.add_on_connection_unblocked_callback(lambda _c, _m: events.append("unblocked"))
        ch = conn.channel()
        ch.queue_declare("d", durable=True)
        ch.confirm_delivery()
        persistent = pika.BasicProperties(delivery_mode=2)
        ch.basic_publish("", "d", b"before", persistent)  # confirmed: plenty of space
        small_disk.fill()
        deadline = time.monotonic() + 10
        while "blocked" not in events and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.2)
        assert events == ["blocked"]
        confirmed = threading.Event()

        def publish() -> None:  # blocks in pika until the broker confirms
            ch.basic_publish("", "d", b"during", persistent)
            confirmed.set()

        t = threading.Thread(target=publish, daemon=True)
        t.start()
        time.sleep(2.5)  # two disk checks: the publish stays unread and unconfirmed
        assert not confirmed.is_set(), "a publish was confirmed while the disk alarm was on"
        assert message_count(b.port, "d") == 1  # a consumer-side connection still works
        small_disk.free()
        assert confirmed.wait(10), "the publish was not confirmed after the alarm cleared"
        t.join(5)
        conn.process_data_events(time_limit=0.5)  # pika dispatches the unblocked callback here
        assert events == ["blocked", "unblocked"]
        assert message_count(b.port, "d") == 2
        conn.close()
    finally:
        stop_broker(b)


def test_disk_alarm_holds_stomp_receipts_until_space_returns(small_disk: SmallDisk) -> None:
    b = disk_broker(small_disk)
    try:
        conn, got = stomp_connect(b.stomp_port)
        conn.send("/queue/s", "before", headers={"receipt": "r1", "persistent": "true"})
        assert got.receipt() == "r1"
        small_disk.fill()
        wait_for(lambda: "disk alarm" in b.log(), what="the disk alarm")
        conn.send("/queue/s", "during", headers={"receipt": "r2", "persistent": "true"})
        with pytest.raises(queue.Empty):
            got.receipts.get(timeout=2.5)
        assert message_count(b.port, "s") == 1
        small_disk.free()
        assert got.receipt(timeout=10) == "r2"
        assert message_count(b.port, "s") == 2
        conn.disconnect()
    finally:
        stop_broker(b)


def test_disk_alarm_answers_sqs_sends_503_service_unavailable(small_disk: SmallDisk) -> None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    b = disk_broker(small_disk, "--sqs-any-credentials")
    try:
        sqs = boto3.client("sqs", endpoint_url=b.sqs_url, region_name="us-east-1", aws_access_key_id="guest",
                           aws_secret_access_key="guest", config=Config(retries={"total_max_attempts": 1}))
        url = sqs.create_queue(QueueName="q")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="before")
        small_disk.fill()
        wait_for(lambda: "disk alarm" in b.log(), what="the disk alarm")
        for send in (lambda: sqs.send_message(QueueUrl=url, MessageBody="during"),
                     lambda: sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "1", "MessageBody": "x"}])):
            with pytest.raises(ClientError) as info:
                send()
            assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
            assert info.value.response["Error"]["Code"] == "ServiceUnavailable"
        # the Query protocol (form in, XML out) gets the same error in its own shape
        form = urllib.parse.urlencode({"Action": "SendMessage", "QueueUrl": url, "MessageBody": "q"}).encode()
        with pytest.raises(urllib.error.HTTPError) as http:
            urllib.request.urlopen(urllib.request.Request(url, data=form), timeout=10)
        assert http.value.code == 503
        assert b"<Code>ServiceUnavailable</Code>" in http.value.read()
        # consumers drain: receive and delete keep working
        msgs = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
        assert [m["Body"] for m in msgs] == ["before"]
        sqs.delete_message(QueueUrl=url, ReceiptHandle=msgs[0]["ReceiptHandle"])
        small_disk.free()
        retrying = boto3.client("sqs", endpoint_url=b.sqs_url, region_name="us-east-1", aws_access_key_id="guest",
                                aws_secret_access_key="guest",
                                config=Config(retries={"mode": "standard", "max_attempts": 10}))
        retrying.send_message(QueueUrl=url, MessageBody="after")  # retried through the 503s until clear
        msgs = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
        assert [m["Body"] for m in msgs] == ["after"]
    finally:
        stop_broker(b)
