"""Test doubles shipped with haremq: fake clock, recording sessions, in-process broker on port 0."""

from haremq.testing.fakes import FakeClock, RecordingSink, session_for
from haremq.testing.server import BrokerThread, running_broker

__all__ = ["BrokerThread", "FakeClock", "RecordingSink", "running_broker", "session_for"]
