"""Tasks: the list-function DSL (default), and later the exact testbed and code contests."""
