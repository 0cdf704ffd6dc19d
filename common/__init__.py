"""Small pieces every layer shares: errors, atomic output, table I/O."""
