"""Each provider's request body for a notification `Message` (pure functions)."""
