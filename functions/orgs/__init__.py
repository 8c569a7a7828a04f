"""The orgs function: organizations, members, roles and invitations (/api/auth/organization/*)."""
