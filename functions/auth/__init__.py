"""The auth function: accounts, sessions, social sign-in (/api/auth/*) and API keys."""
