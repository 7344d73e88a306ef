"""Hub schema revisions, one module each (Alembic skips this file): add one with python -m nordfed.hub.migrations."""
