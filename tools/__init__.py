"""Code generators; installed as the `netcore_tools` package (netcore-gen)."""
