"""The node's local endpoint: what an installer or technician on the LAN talks to directly."""
