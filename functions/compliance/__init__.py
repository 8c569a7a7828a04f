"""The compliance function: HIPAA BAAs, the EU AI Act registry and compliance reports."""
