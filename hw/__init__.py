"""Hardware: serial devices, watchdogs and sensors."""
