"""hybridrec's shared data layer: settings, clients, mappings, encoder, documents, bulk writes, index lifecycle."""
from indexer.settings import Settings, SettingsError, get_settings, load_settings

__all__ = ["Settings", "SettingsError", "get_settings", "load_settings"]
