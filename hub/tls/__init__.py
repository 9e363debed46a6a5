"""The hub's certificate authority: node and server certificates, revocation, TLS contexts."""
