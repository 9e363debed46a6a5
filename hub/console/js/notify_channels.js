// Placeholder (issue 21): filled in by its owner.
