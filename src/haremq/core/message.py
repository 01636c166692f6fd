"""The message model moved to ``haremq.message`` (protocols and the store use it without the core).

Re-exported here only for code written against the old path (branches in flight); import
``haremq.message`` in new code.
"""

from haremq.message import EMPTY_PROPERTIES, Headers, Message, Properties

__all__ = ["EMPTY_PROPERTIES", "Headers", "Message", "Properties"]
