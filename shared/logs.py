"""JSON structured logging (aws-lambda-powertools), one logger for the whole process."""

from __future__ import annotations

from aws_lambda_powertools import Logger

# The service name comes from POWERTOOLS_SERVICE_NAME (set per function in template.yaml),
# the level from LOG_LEVEL. Keys appended with `append_context_keys` are per request.
logger = Logger(service=None, use_rfc3339=True)
