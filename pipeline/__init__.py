"""What every offline stage shares: the one config file, one-line errors, atomic file writes."""
