"""STOMP 1.0/1.1/1.2: a sans-IO frame codec (``frames``) and the session state machine (``session``)."""
