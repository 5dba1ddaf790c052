"""netcore-dummy: the load generator that drives a netcore game server."""
