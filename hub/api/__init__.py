"""HTTP handlers, one module per route family; the route table is in `hub.app`."""
