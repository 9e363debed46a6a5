"""Hardware of a recording box: serial devices (front panel, UPS, GPS), watchdogs and sensors."""
