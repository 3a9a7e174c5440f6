"""Integrations with the outside world: credential sources and alert channels."""
