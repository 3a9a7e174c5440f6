"""Monitor configs: the schema, loading and validation, and generation of new ones."""

from exportmon.config.load import discover, load_monitor, load_monitors
from exportmon.config.schema import MonitorConfig

__all__ = ["MonitorConfig", "discover", "load_monitor", "load_monitors"]
