"""OTLP receivers: thin adapters over Pipeline.export."""
