"""The pytest plugin (entry point ``memguard``). Placeholder until the plugin lands: loads cleanly, adds nothing."""
