"""The installer's tool: mDNS discovery, enrollment, certificates."""
