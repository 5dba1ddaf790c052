"""The chat game, netcore-server: its room, its chat handler, its page, on netcore_server."""
