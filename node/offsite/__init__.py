"""Off-site copies from the node (issue 20): direct uploads to a provider through requests the hub presigns."""
