"""Game logic: the packet handlers the generated dispatchers call."""
