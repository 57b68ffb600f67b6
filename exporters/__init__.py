"""Exporters shipped with sloguard."""
