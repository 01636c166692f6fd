"""The ``haremq_broker`` pytest fixture users get with ``pip install haremq``, run as they would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

INNER = '''
import json, urllib.request, base64
import boto3, pika, stomp

def test_every_listener(haremq_broker, tmp_path_factory):
    path = {out!r}
    with open(path, "w") as f:
        f.write(haremq_broker.settings.data_dir)
    conn = pika.BlockingConnection(pika.URLParameters(haremq_broker.amqp_url))
    ch = conn.channel()
    ch.queue_declare("fixture-q")
    ch.basic_publish("", "fixture-q", b"over amqp")
    conn.close()
    sqs = boto3.client("sqs", endpoint_url=haremq_broker.sqs_endpoint_url, region_name="us-east-1",
                       aws_access_key_id="guest", aws_secret_access_key="guest")
    url = sqs.create_queue(QueueName="fixture-sqs")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="over sqs")
    assert sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "over sqs"
    st = stomp.Connection([("127.0.0.1", haremq_broker.stomp_port)])
    st.connect("guest", "guest", wait=True)
    st.disconnect()
    req = urllib.request.Request(haremq_broker.management_url + "/api/queues/%2F/fixture-q",
                                 headers={{"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}})
    with urllib.request.urlopen(req, timeout=10) as res:
        assert json.loads(res.read())["messages"] == 1
'''


def test_haremq_broker_fixture_exposes_every_listener_and_removes_its_data_dir(tmp_path: Path) -> None:
    out = tmp_path / "data_dir.txt"
    (tmp_path / "test_inner.py").write_text(INNER.format(out=str(out)))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
                           str(tmp_path), str(tmp_path / "test_inner.py")], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
    data_dir = out.read_text()
    assert data_dir and not os.path.exists(data_dir), f"{data_dir} was left behind"
