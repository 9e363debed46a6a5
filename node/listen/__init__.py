"""Live listen on the node (issue 23): the streams cmd/listen asks for, encoded once each and sent to the hub."""
