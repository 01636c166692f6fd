"""HTTP listeners: the SQS API (9324) and management API + metrics + dashboard (15672)."""
