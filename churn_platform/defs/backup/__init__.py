"""Warehouse backups after every successful ELT run."""
