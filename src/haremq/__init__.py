"""haremq: a message broker for Python shops (AMQP 0-9-1, STOMP, SQS-compatible HTTP)."""

__version__ = "0.1.0"

from haremq.config import Settings
from haremq.errors import HareError

__all__ = ["HareError", "Settings", "__version__"]
