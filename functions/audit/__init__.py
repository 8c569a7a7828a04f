"""The audit function: the audit trail: events, export, verification, live feed, ingestion."""
