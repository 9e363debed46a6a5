"""hark node agent: capture, meters, recording, upload, health, local technician endpoint."""
