"""Built-in method plugins, installed as ``fsad_methods`` and registered by entry points."""
