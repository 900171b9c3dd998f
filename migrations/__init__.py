"""Alembic migrations for SmartRoute's schema."""
