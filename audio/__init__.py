"""Audio capture backends, meters, ring buffer and segment writer."""
