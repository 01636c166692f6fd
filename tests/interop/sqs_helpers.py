"""Start a real ``haremq serve`` with every listener on an ephemeral port; boto3 clients for it."""

from __future__ import annotations

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
