"""Live listen at the hub (issue 23): node streams fanned out to every listener, sessions and their states."""
