"""Memory alarm: above the high watermark a publishing connection is blocked (not read, told
connection.blocked); consumers keep working; when memory falls it is unblocked and resumes."""

from __future__ import annotations

import time

import pika

from brokerproc import start_broker, stop_broker


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_memory_alarm_blocks_publishers_until_memory_returns() -> None:
    probe = start_broker()
    idle = rss(probe.proc.pid)
    stop_broker(probe)
    b = start_broker(env={"HAREMQ_MEMORY_HIGH_WATERMARK": str(idle + 48 * 1024 * 1024)})
    try:
        pub = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        events: list[str] = []
        pub.add_on_connection_blocked_callback(lambda _c, _m: events.append("blocked"))
        pub.add_on_connection_unblocked_callback(lambda _c, _m: events.append("unblocked"))
        ch = pub.channel()
        ch.queue_declare("big")
        body = b"x" * (1024 * 1024)  # 1 MiB bodies: malloc gives them back to the OS when freed
        for _ in range(80):
            ch.basic_publish("", "big", body)
        deadline = time.monotonic() + 10
        while "blocked" not in events and time.monotonic() < deadline:
            pub.process_data_events(time_limit=0.2)
        assert events == ["blocked"]
        # a second connection that only consumes is not blocked: it drains the queue
        other = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        och = other.channel()
        assert och.queue_purge("big").method.message_count > 0
        deadline = time.monotonic() + 10
        while "unblocked" not in events and time.monotonic() < deadline:
            pub.process_data_events(time_limit=0.2)
        assert events == ["blocked", "unblocked"]
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
