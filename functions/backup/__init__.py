"""The backup function: pg_dump streamed to S3 with a manifest, one backup per scheduled time."""
