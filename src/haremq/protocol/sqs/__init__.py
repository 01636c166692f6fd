"""SQS API: AWS JSON 1.0 requests -> typed operations -> core -> responses; SigV4 verification."""
