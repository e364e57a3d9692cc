"""Real measurements: curve files (through sasdata) and detector images -> q, strictly validated."""
