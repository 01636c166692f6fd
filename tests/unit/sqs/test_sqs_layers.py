"""The SQS protocol layer stands apart from the core: it shares only the stored message format."""

from __future__ import annotations

import ast
from pathlib import Path

import haremq.protocol.sqs
from haremq.core.delay import DELAY_HEADER
from haremq.protocol.sqs import attributes, mapping


def test_protocol_sqs_imports_nothing_from_the_core() -> None:
    root = Path(haremq.protocol.sqs.__file__).parent
    offenders = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {n}" for n in names if n == "haremq.core" or n.startswith("haremq.core.")]
    assert offenders == []


def test_delay_header_hidden_from_sqs_attributes_is_the_one_the_core_writes() -> None:
    assert attributes.DELAY_HEADER == DELAY_HEADER
    assert DELAY_HEADER in mapping.RESERVED
