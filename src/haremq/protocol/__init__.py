"""Sans-IO protocol codecs and state machines: bytes in, typed events out. No sockets here."""
